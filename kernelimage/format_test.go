package kernelimage

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var allCompressions = []Compression{Gzip, Xz, Zstd, Lzma, Lz4, Bzip2}

func TestInspectFormats(t *testing.T) {
	dir := t.TempDir()
	type want struct {
		format      Format
		arch        Arch
		release     string
		compression Compression
		pvh         bool
	}
	cases := []struct {
		name string
		data func(t *testing.T) []byte
		want want
	}{
		{"ELF with PVH note", func(t *testing.T) []byte { return testELF(true) }, want{ELF, X86_64, testRelease, None, true}},
		{"ELF without PVH note", func(t *testing.T) []byte { return testELF(false) }, want{ELF, X86_64, testRelease, None, false}},
		{"ELF32 with 4-byte PVH note", func(t *testing.T) []byte {
			return makeELF(elfSpec{machine: 3, pvh: true, pvhDesc: 4, release: "5.10.0-i386", bodySize: 1000})
		}, want{ELF, I386, "5.10.0-i386", None, true}},
		{"arm64 Image", func(t *testing.T) []byte { return makeArm64Image(64<<10, 1) }, want{Image, AArch64, testRelease, None, false}},
		{"Image.gz", func(t *testing.T) []byte { return compressWith(t, Gzip, makeArm64Image(64<<10, 1)) }, want{ImageGzip, AArch64, "", Gzip, false}},
	}
	for _, c := range allCompressions {
		cases = append(cases, struct {
			name string
			data func(t *testing.T) []byte
			want want
		}{"bzImage " + string(c), func(t *testing.T) []byte { img, _ := testBzImage(t, c, true); return img }, want{BzImage, X86_64, testRelease, c, false}})
		cases = append(cases, struct {
			name string
			data func(t *testing.T) []byte
			want want
		}{"zboot " + string(c), func(t *testing.T) []byte {
			return makeZboot(compressWith(t, c, makeArm64Image(64<<10, 1)), string(c), 0xaa64)
		}, want{Zboot, AArch64, "", c, false}})
	}
	// A zboot image whose PE header names no machine: the Image header
	// inside tells, where that is cheap to read.
	for _, c := range []Compression{Gzip, Zstd, Lz4} {
		cases = append(cases, struct {
			name string
			data func(t *testing.T) []byte
			want want
		}{"zboot " + string(c) + " without PE machine", func(t *testing.T) []byte {
			return makeZboot(compressWith(t, c, makeArm64Image(64<<10, 1)), string(c), 0)
		}, want{Zboot, AArch64, "", c, false}})
	}
	cases = append(cases, struct {
		name string
		data func(t *testing.T) []byte
		want want
	}{"zboot xz without PE machine", func(t *testing.T) []byte {
		return makeZboot(compressWith(t, Xz, makeArm64Image(64<<10, 1)), "xzkern", 0)
	}, want{Zboot, "", "", Xz, false}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_"), tc.data(t))
			info, err := Inspect(path)
			if err != nil {
				t.Fatal(err)
			}
			got := want{info.Format, info.Arch, info.Release, info.Compression, info.PVH}
			if got != tc.want {
				t.Errorf("Inspect = %+v, want %+v", got, tc.want)
			}
			if info.Path != path {
				t.Errorf("Path = %q, want %q", info.Path, path)
			}
			if info.PVH && info.PVHEntry != 0x1000850 {
				t.Errorf("PVHEntry = %#x, want 0x1000850", info.PVHEntry)
			}
			if info.Format == BzImage && (info.BootProtocol != 0x020f || info.PayloadOffset != 4*512+0x100) {
				t.Errorf("BootProtocol %#x, PayloadOffset %d; want 0x20f, %d", info.BootProtocol, info.PayloadOffset, 4*512+0x100)
			}
		})
	}
}

func TestInspectRejects(t *testing.T) {
	dir := t.TempDir()
	bz, _ := testBzImage(t, Gzip, true)
	lzoBz := append([]byte(nil), bz...)
	copy(lzoBz[4*512+0x100:], lzoMagic)
	cases := []struct {
		name string
		data []byte
		want string // in the error, besides the path
		is   error
	}{
		{"empty", nil, "expected an x86 bzImage", ErrUnknownFormat},
		{"text", []byte("#!/bin/sh\necho not a kernel\n"), "expected an x86 bzImage", ErrUnknownFormat},
		{"bare xz", makeXZ(t, []byte("hello"), 0), "a bare xz stream", ErrUnknownFormat},
		{"gzip of text", compressWith(t, Gzip, bytes.Repeat([]byte("text "), 100)), "not an arm64 or riscv64 Linux Image", ErrUnknownFormat},
		{"bzImage cut in its header", bz[:0x230], "setup header truncated", nil},
		{"bzImage cut in its payload", bz[:len(bz)-200], "outside the", nil},
		{"bzImage with old protocol", func() []byte {
			b := append([]byte(nil), bz...)
			b[versionOff], b[versionOff+1] = 0x04, 0x02
			return b
		}(), "boot protocol 2.04", ErrUnsupported},
		{"bzImage with garbage payload", func() []byte {
			b := append([]byte(nil), bz...)
			copy(b[4*512+0x100:], "garbage!")
			return b
		}(), "no compression this package knows", nil},
		{"bzImage with version pointer past the end", func() []byte {
			elf := makeELF(elfSpec{class64: true, machine: 62, release: testRelease, bodySize: 100})
			b := makeBzImage(kernelPayload(Gzip, compressWith(t, Gzip, elf), len(elf)), testRelease)
			b[kernelVersionOff], b[kernelVersionOff+1] = 0xff, 0x7f
			return b
		}(), "past the", nil},
		{"ELF with no program headers", testELF(true)[:64], "program headers", nil},
		{"ELF cut in its notes", testELF(true)[:200], "lies outside", nil},
		{"zboot with payload past the end", makeZboot([]byte("x"), "gzip", 0xaa64)[:0x100], "outside the", nil},
		{"zboot without PE machine holding text", makeZboot(compressWith(t, Gzip, bytes.Repeat([]byte("text "), 100)), "gzip", 0), "EFI zboot payload: " + ErrUnknownFormat.Error(), ErrUnknownFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_"), tc.data)
			_, err := Inspect(path)
			if err == nil {
				t.Fatal("Inspect succeeded")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and say %q", err, path, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
	t.Run("garbage version string", func(t *testing.T) {
		b := append([]byte(nil), bz...)
		b[kernelVersionOff], b[kernelVersionOff+1] = 0x00, 0x01 // into the setup code
		info, err := Inspect(writeFile(t, dir, "badversion", b))
		if err != nil || info.Release != "" || info.Format != BzImage {
			t.Fatalf("Inspect = %+v, %v; want a bzImage of unknown release", info, err)
		}
	})
	t.Run("lzo is recognised", func(t *testing.T) {
		info, err := Inspect(writeFile(t, dir, "lzo", lzoBz))
		if err != nil || info.Compression != Lzo {
			t.Fatalf("Inspect = %+v, %v; want lzo", info, err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := Inspect(dir + "/nope"); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("error %v does not name the file", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := Inspect(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("error %v", err)
		}
	})
}

// Every prefix of every image gives an answer or an error, never a panic.
func TestInspectTruncations(t *testing.T) {
	bz, _ := testBzImage(t, Xz, true)
	images := [][]byte{bz, testELF(true), makeArm64Image(4096, 3), makeZboot(compressWith(t, Zstd, makeArm64Image(4096, 3)), "zstd22", 0xaa64)}
	for _, img := range images {
		for n := 0; n < min(len(img), 3000); n++ {
			inspect(bytes.NewReader(img[:n]), int64(n))
		}
	}
}

func TestReleaseScanner(t *testing.T) {
	banner := testBanner("6.1.0-28-amd64")
	data := append(bytes.Repeat([]byte("x"), 5000), "Linux version  (broken)\n"...)
	data = append(data, "Linux version 1 2 3\n"...)
	data = append(data, banner...)
	data = append(data, "Linux version 9.9.9 (later) #2"...)
	// Every write size, so that the banner straddles every boundary.
	for size := 1; size < 200; size++ {
		var s releaseScanner
		for i := 0; i < len(data); i += size {
			s.Write(data[i:min(len(data), i+size)])
		}
		if s.release != "6.1.0-28-amd64" {
			t.Fatalf("write size %d: release %q", size, s.release)
		}
	}
	var s releaseScanner
	s.Write(bytes.Repeat([]byte("Linux version "), 1000))
	if s.release != "" {
		t.Fatalf("release %q from no banner", s.release)
	}
	long := "Linux version " + strings.Repeat("a", 65) + " (x)"
	if r := findRelease([]byte(long)); r != "" {
		t.Fatalf("release %q longer than 64 bytes accepted", r)
	}
}

func TestRealKernelsInspect(t *testing.T) {
	t.Run("x86_64", func(t *testing.T) {
		path := realKernel(t, "x86_64")
		info, err := Inspect(path)
		if err != nil {
			t.Fatal(err)
		}
		release := strings.TrimPrefix(path[strings.LastIndex(path, "/")+1:], "vmlinuz-")
		if info.Format != BzImage || info.Arch != X86_64 || info.Release != release || info.Compression == None {
			t.Fatalf("Inspect = %+v; want an x86_64 bzImage of release %s", info, release)
		}
		t.Logf("%s: %s %s %s, %s payload of %d bytes, boot protocol %#x", path, info.Format, info.Arch, info.Release, info.Compression, info.PayloadLength, info.BootProtocol)
	})
	t.Run("aarch64", func(t *testing.T) {
		path := realKernel(t, "aarch64")
		info, err := Inspect(path)
		if err != nil {
			t.Fatal(err)
		}
		release := strings.TrimPrefix(path[strings.LastIndex(path, "/")+1:], "vmlinuz-")
		if info.Arch != AArch64 || (info.Format == Image && info.Release != release) {
			t.Fatalf("Inspect = %+v; want an aarch64 kernel of release %s", info, release)
		}
		t.Logf("%s: %s %s %q, compression %s", path, info.Format, info.Arch, info.Release, info.Compression)
	})
}
