package kernelimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUncompressEveryFormat(t *testing.T) {
	dir := t.TempDir()
	arm := makeArm64Image(300<<10, 5)
	type tc struct {
		name  string
		image []byte
		want  []byte
		pvh   bool
		arch  Arch
	}
	var cases []tc
	for _, c := range allCompressions {
		for _, pvh := range []bool{true, false} {
			img, elf := testBzImage(t, c, pvh)
			name := "bzImage " + string(c)
			if !pvh {
				name += " no PVH"
			}
			cases = append(cases, tc{name, img, elf, pvh, X86_64})
		}
		cases = append(cases, tc{"zboot " + string(c), makeZboot(compressWith(t, c, arm), string(c), 0xaa64), arm, false, AArch64})
	}
	cases = append(cases,
		tc{"Image.gz", compressWith(t, Gzip, arm), arm, false, AArch64},
		tc{"zboot xz with ARM64 BCJ", makeZboot(makeXZ(t, arm, xzFilterARM64), "xzkern", 0xaa64), arm, false, AArch64},
		tc{"bzImage xz without BCJ", makeBzImage(kernelPayload(Xz, makeXZ(t, testELF(true), 0), len(testELF(true))), testRelease), testELF(true), true, X86_64},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := writeFile(t, dir, strings.ReplaceAll(c.name, " ", "_"), c.image)
			dst := src + ".out"
			srcInfo, out, err := Uncompress(context.Background(), src, dst)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("output (%d bytes) differs from the original (%d bytes)", len(got), len(c.want))
			}
			if out.Path != dst || out.Size != int64(len(c.want)) || out.PVH != c.pvh || out.Arch != c.arch || out.Release != testRelease || out.Compression != None {
				t.Errorf("out = %+v", out)
			}
			if srcInfo.Path != src || !srcInfo.Compressed() {
				t.Errorf("src = %+v", srcInfo)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

// The tools the kernel's build runs, where installed: their output, not
// only this package's test encoders, must decompress.
func TestUncompressToolOutput(t *testing.T) {
	dir := t.TempDir()
	elf := testELF(true)
	arm := makeArm64Image(300<<10, 9)
	cases := []struct {
		name string
		c    Compression
		args []string
		arm  bool
	}{
		{"xz --x86", Xz, []string{"xz", "--format=xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c"}, false},
		{"xz --arm64", Xz, []string{"xz", "--format=xz", "--check=crc32", "--arm64", "--lzma2=dict=1MiB", "-c"}, true},
		{"xz crc64", Xz, []string{"xz", "--check=crc64", "-c"}, false},
		{"xz sha256", Xz, []string{"xz", "--check=sha256", "-c"}, false},
		{"lzma -9", Lzma, []string{"lzma", "-9", "-c"}, false},
		{"lz4 -l -12", Lz4, []string{"lz4", "-l", "-12", "-c"}, false},
		{"zstd -22 --ultra", Zstd, []string{"zstd", "-22", "--ultra", "-c", "-q"}, false},
		{"bzip2 -9", Bzip2, []string{"bzip2", "-9", "-c"}, false},
		{"gzip -n -9", Gzip, []string{"gzip", "-n", "-9", "-c"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := elf
			if c.arm {
				data = arm
			}
			stream := runTool(t, data, c.args[0], c.args[1:]...)
			if c.args[0] == "xz" && c.arm && bytes.Contains(stream[:32], []byte{xzFilterARM64}) == false {
				t.Logf("stream header: % x", stream[:32])
			}
			var img []byte
			if c.arm {
				img = makeZboot(stream, "xzkern", 0xaa64)
			} else {
				img = makeBzImage(kernelPayload(c.c, stream, len(data)), testRelease)
			}
			src := writeFile(t, dir, strings.ReplaceAll(c.name, " ", "_"), img)
			_, out, err := Uncompress(context.Background(), src, src+".out")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(out.Path)
			if !bytes.Equal(got, data) {
				t.Fatalf("output (%d bytes) differs from the original (%d bytes)", len(got), len(data))
			}
		})
	}
}

func TestUncompressRejects(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	bzXz, _ := testBzImage(t, Xz, true)
	payloadStart := 4*512 + 0x100

	flip := func(b []byte, at int) []byte {
		c := append([]byte(nil), b...)
		c[at] ^= 0x55
		return c
	}
	wrongLength := func(c Compression) []byte {
		img, _ := testBzImage(t, c, true)
		plen := int(binary.LittleEndian.Uint32(img[payloadLengthOff:]))
		at := payloadStart + plen - 4
		binary.LittleEndian.PutUint32(img[at:], binary.LittleEndian.Uint32(img[at:])+1)
		return img
	}
	notELF := makeBzImage(kernelPayload(Gzip, compressWith(t, Gzip, makeArm64Image(4096, 1)), 4096), "")
	armInX86 := makeZboot(compressWith(t, Gzip, testELF(true)), "gzip", 0xaa64)
	cases := []struct {
		name  string
		image []byte
		want  string
		is    error
	}{
		{"ELF", testELF(true), "already uncompressed", ErrNotCompressed},
		{"Image", makeArm64Image(4096, 1), "already uncompressed", ErrNotCompressed},
		{"xz data corrupt", flip(bzXz, payloadStart+5000), "", nil},
		{"xz check corrupt", func() []byte {
			end := payloadStart + int(binary.LittleEndian.Uint32(bzXz[payloadLengthOff:])) - 4
			indexLen := (int(binary.LittleEndian.Uint32(bzXz[end-8:])) + 1) * 4
			return flip(bzXz, end-12-indexLen-2)
		}(), "check mismatch", nil},
		{"xz length trailer wrong", wrongLength(Xz), "but the image says", nil},
		{"lz4 length trailer wrong", wrongLength(Lz4), "but the image says", nil},
		{"gzip length wrong", wrongLength(Gzip), "", nil},
		{"huge length trailer", func() []byte {
			img := append([]byte(nil), bzXz...)
			plen := int(binary.LittleEndian.Uint32(img[payloadLengthOff:]))
			binary.LittleEndian.PutUint32(img[payloadStart+plen-4:], 3<<30)
			return img
		}(), "not a kernel", nil},
		{"bzImage holding no ELF", notELF, "not a valid ELF vmlinux", nil},
		{"zboot holding no Image", armInX86, "no Linux Image", nil},
		{"lzo", func() []byte {
			b := append([]byte(nil), bzXz...)
			copy(b[payloadStart:], lzoMagic)
			return b
		}(), "lzo", ErrUnsupported},
		{"xz with a PowerPC BCJ filter", makeBzImage(kernelPayload(Xz, func() []byte {
			x := makeXZ(t, testELF(true), xzFilterX86)
			// Rewrite the filter ID and the block header's CRC32.
			x[12+2] = 0x05
			hl := (int(x[12]) + 1) * 4
			binary.LittleEndian.PutUint32(x[12+hl-4:], crc32.ChecksumIEEE(x[12:12+hl-4]))
			return x
		}(), len(testELF(true))), testRelease), "filter 0x5", ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := writeFile(t, dir, strings.ReplaceAll(c.name, " ", "_"), c.image)
			dst := src + ".out"
			_, _, err := Uncompress(ctx, src, dst)
			if err == nil {
				t.Fatal("Uncompress succeeded")
			}
			if !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s and say %q", err, src, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after a failure", dst)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

// Every truncation of every compressed payload gives an error, not a panic,
// a hang or a partial output under the final name.
func TestUncompressTruncatedPayloads(t *testing.T) {
	dir := t.TempDir()
	for _, c := range allCompressions {
		elf := makeELF(elfSpec{class64: true, machine: 62, pvh: true, pvhDesc: 8, release: testRelease, bodySize: 20 << 10, seed: 3})
		stream := compressWith(t, c, elf)
		for _, cut := range []int{1, 2, 5, 13, 64, len(stream) / 3, len(stream) / 2, len(stream) - 40, len(stream) - 5, len(stream) - 1} {
			if cut <= 0 || cut >= len(stream) {
				continue
			}
			img := makeBzImage(kernelPayload(c, stream[:cut], len(elf)), testRelease)
			src := writeFile(t, dir, "cut", img)
			if _, _, err := Uncompress(context.Background(), src, src+".out"); err == nil {
				t.Errorf("%s cut at %d of %d: no error", c, cut, len(stream))
			}
			if _, err := os.Stat(src + ".out"); err == nil {
				t.Errorf("%s cut at %d: output exists", c, cut)
			}
		}
	}
}

func TestUncompressCancelled(t *testing.T) {
	dir := t.TempDir()
	img, _ := testBzImage(t, Xz, true)
	src := writeFile(t, dir, "bz", img)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := Uncompress(ctx, src, src+".out")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	var bad *imageError
	if errors.As(err, &bad) {
		t.Fatalf("a cancelled context is blamed on the image: %v", err)
	}
}

// The x86 BCJ decoder, fed in pieces of every size, gives what one call
// over the whole buffer gives: its state carries across buffers.
func TestBCJPieces(t *testing.T) {
	data := x86Body(50<<10, 11)
	enc := append([]byte(nil), data...)
	(&x86BCJ{}).code(enc, true)
	if bytes.Equal(enc, data) {
		t.Fatal("the encoder changed nothing: the test data has no convertible calls")
	}
	arm := makeArm64Image(50<<10, 12)
	armEnc := append([]byte(nil), arm...)
	(&arm64BCJ{}).code(armEnc, true)
	for _, chunk := range []int{1, 3, 4, 5, 7, 64, 4093} {
		for _, f := range []struct {
			name      string
			enc, want []byte
			coder     bcjCoder
		}{{"x86", enc, data, &x86BCJ{}}, {"arm64", armEnc, arm, &arm64BCJ{}}} {
			r := newBCJReader(&chunkReader{b: f.enc, n: chunk}, f.coder)
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.want) {
				t.Fatalf("%s in chunks of %d: decoded data differs", f.name, chunk)
			}
		}
	}
}

type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}

func TestRealKernelsUncompress(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses whole distribution kernels; skipped with -short")
	}
	dir := t.TempDir()
	t.Run("x86_64", func(t *testing.T) {
		path := realKernel(t, "x86_64")
		start := time.Now()
		src, out, err := Uncompress(context.Background(), path, filepath.Join(dir, "vmlinux"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%s, %d bytes) -> ELF of %d bytes in %v; PVH %v entry %#x; release %s", path, src.Compression, src.Size, out.Size, time.Since(start), out.PVH, out.PVHEntry, out.Release)
		if out.Format != ELF || out.Arch != X86_64 || !out.PVH || out.Release != src.Release {
			t.Fatalf("out = %+v; want an x86_64 ELF with the PVH note and release %s", out, src.Release)
		}
	})
	t.Run("aarch64", func(t *testing.T) {
		path := realKernel(t, "aarch64")
		src, err := Inspect(path)
		if err != nil {
			t.Fatal(err)
		}
		if src.Compressed() {
			_, out, err := Uncompress(context.Background(), path, filepath.Join(dir, "Image"))
			if err != nil {
				t.Fatal(err)
			}
			if out.Arch != AArch64 || out.Release == "" {
				t.Fatalf("out = %+v", out)
			}
			return
		}
		// Debian ships a raw Image: gzip it, wrap it in zboot with
		// gzip and zstd, and get the same bytes back.
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name  string
			image []byte
		}{
			{"Image.gz", compressWith(t, Gzip, raw)},
			{"zboot-gzip", makeZboot(compressWith(t, Gzip, raw), "gzip", 0xaa64)},
			{"zboot-zstd", makeZboot(compressWith(t, Zstd, raw), "zstd22", 0xaa64)},
			// Several of lz4's 8 MiB legacy blocks, as the kernel's
			// `lz4 -l` writes them.
			{"zboot-lz4-legacy", makeZboot(runTool(t, raw, "lz4", "-l", "-9", "-c"), "lz4", 0xaa64)},
			// 4 MiB through the xz tool's ARM64 BCJ: real BL and ADRP.
			{"zboot-xz-arm64", makeZboot(runTool(t, raw[:4<<20], "xz", "--check=crc32", "--arm64", "--lzma2=preset=0", "-c"), "xzkern", 0xaa64)},
		} {
			img := writeFile(t, dir, c.name, c.image)
			start := time.Now()
			_, out, err := Uncompress(context.Background(), img, img+".Image")
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got, _ := os.ReadFile(out.Path)
			want := raw
			if c.name == "zboot-xz-arm64" {
				want = raw[:4<<20]
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: output differs from the Image", c.name)
			}
			t.Logf("%s: %d bytes -> %s Image of %d bytes, release %q, in %v", c.name, len(c.image), out.Arch, out.Size, out.Release, time.Since(start))
		}
	})
}
