package vz

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Where the test images put things: the arm64 Image header's magic
// (Documentation/arch/arm64/booting.rst), and the EFI zboot header's
// compression name (drivers/firmware/efi/libstub/zboot-header.S).
const (
	imageMagicOffset = 0x38
	imageHeaderLen   = 0x40
	zbootTypeOffset  = 24
)

var imageMagic = []byte("ARM\x64")

func zstdCompressed(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := zstd.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func xzCompressed(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// lz4Legacy is what the kernel's build writes (lz4 -l).
func lz4Legacy(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := lz4.NewWriter(&b)
	if err := w.Apply(lz4.LegacyOption(true)); err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestKernelFormats(t *testing.T) {
	img := fakeImage()
	notImage := bytes.Repeat([]byte("not a kernel "), 100)
	for _, tc := range []struct {
		name   string
		kernel []byte
		format KernelFormat
		want   string // error text from NewPlan; "" for success
	}{
		{"Image", img, KernelImage, ""},
		{"Image.gz", gzipped(t, img), KernelGzip, ""},
		{"zboot gzip", zboot(gzipped(t, img), "gzip"), KernelZbootGzip, ""},
		// What package kernelimage brings: every compression the kernel's
		// zboot build offers but lzo.
		{"zboot zstd", zboot(zstdCompressed(t, img), "zstd22"), "EFI zboot, zstd", ""},
		{"zboot xz", zboot(xzCompressed(t, img), "xzkern"), "EFI zboot, xz", ""},
		{"zboot lz4", zboot(lz4Legacy(t, img), "lz4"), "EFI zboot, lz4", ""},
		{"zboot corrupt zstd", zboot([]byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5, 6, 7, 8}, "zstd"), "", "EFI zboot payload: zstd"},
		{"zboot lzo", zboot([]byte{0x89, 'L', 'Z', 'O', 0, 1, 2, 3}, "lzo"), "", "compressed with lzo, which sonix-run cannot decompress"},
		{"zboot payload out of the file", zboot(gzipped(t, img), "gzip")[:0x210], "", "outside the"},
		{"zstd", append([]byte{0x28, 0xb5, 0x2f, 0xfd}, notImage...), "", "a bare zstd stream"},
		{"xz", append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, notImage...), "", "a bare xz stream"},
		{"not an Image", notImage, "", "not a Linux kernel image"},
		{"short file", []byte("ARM"), "", "not a Linux kernel image"},
		{"empty file", nil, "", "not a Linux kernel image"},
		{"gzip of something else", gzipped(t, notImage), "", "not an arm64 or riscv64 Linux Image"},
		{"zboot gzip of something else", zboot(gzipped(t, notImage), "gzip"), "", "not an arm64 or riscv64 Linux Image"},
		{"corrupt gzip", []byte{0x1f, 0x8b, 0, 0, 0}, "", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := baseVM(t, tc.kernel)
			p, err := NewPlan(vm, arm)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.KernelFormat != tc.format || p.KernelSource != vm.Kernel {
				t.Errorf("format %q source %q", p.KernelFormat, p.KernelSource)
			}
			if !tc.format.Compressed() {
				if p.Kernel != vm.Kernel {
					t.Errorf("uncompressed kernel planned as %s", p.Kernel)
				}
				return
			}
			if want := filepath.Join(vm.RunDir, "Image"); p.Kernel != want {
				t.Errorf("kernel %s, want %s", p.Kernel, want)
			}
			if _, err := os.Stat(p.Kernel); !os.IsNotExist(err) {
				t.Errorf("NewPlan wrote the kernel: %v", err)
			}
			if err := p.Prepare(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p.Kernel)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, img) {
				t.Errorf("decompressed %d bytes, not the Image", len(got))
			}
			if entries, _ := os.ReadDir(vm.RunDir); len(entries) != 1 {
				t.Errorf("run directory holds %v, want only Image", entries)
			}
		})
	}
}

// A kernel of another architecture is refused by name.
func TestKernelOtherArch(t *testing.T) {
	riscv := fakeImage()
	copy(riscv[imageMagicOffset:], "RSC\x05")
	vm := baseVM(t, riscv)
	if _, err := NewPlan(vm, arm); err == nil || !strings.Contains(err.Error(), "is an Image for riscv64; Virtualization.framework on this Mac boots only arm64 kernels") {
		t.Errorf("got %v", err)
	}
	// A zboot xz image naming no machine is checked when decompressed.
	vm = baseVM(t, zboot(xzCompressed(t, riscv), "xzkern"))
	p, err := NewPlan(vm, arm)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Prepare(); err == nil || !strings.Contains(err.Error(), "for riscv64, not arm64") {
		t.Errorf("got %v", err)
	}
	if entries, _ := os.ReadDir(vm.RunDir); len(entries) != 0 {
		t.Errorf("a failed Prepare left %v", entries)
	}
}

func TestCompressedKernelNeedsRunDir(t *testing.T) {
	vm := baseVM(t, gzipped(t, fakeImage()))
	vm.RunDir = ""
	if _, err := NewPlan(vm, arm); err == nil || !strings.Contains(err.Error(), "no run directory") {
		t.Errorf("got %v", err)
	}
}

func TestPrepareRejectsChangedKernel(t *testing.T) {
	// The kernel changed between planning and preparing: still checked.
	vm := baseVM(t, gzipped(t, fakeImage()))
	p, err := NewPlan(vm, arm)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(vm.Kernel), filepath.Base(vm.Kernel), gzipped(t, []byte(strings.Repeat("x", 200))))
	if err := p.Prepare(); err == nil || !strings.Contains(err.Error(), "not an arm64 or riscv64 Linux Image") {
		t.Errorf("got %v", err)
	}
	if entries, _ := os.ReadDir(vm.RunDir); len(entries) != 0 {
		t.Errorf("a failed Prepare left %v", entries)
	}
}
