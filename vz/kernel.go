package vz

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sonix-run/sonix-run/launcher"
)

// KernelFormat is what kind of kernel file the boot loader was given.
type KernelFormat string

const (
	// KernelImage is an uncompressed arm64 Image, what the framework boots
	// on Apple silicon.
	KernelImage KernelFormat = "arm64 Image"
	// KernelGzip is a gzip'd arm64 Image (Image.gz).
	KernelGzip KernelFormat = "gzip"
	// KernelZbootGzip is an EFI zboot image (vmlinuz.efi) whose payload is a
	// gzip'd arm64 Image.
	KernelZbootGzip KernelFormat = "EFI zboot, gzip"
	// KernelX86 is an x86_64 kernel, passed to the framework as it is.
	KernelX86 KernelFormat = "x86_64 kernel"
)

// Compressed reports whether the kernel must be decompressed before booting.
func (f KernelFormat) Compressed() bool { return f == KernelGzip || f == KernelZbootGzip }

// The arm64 Image header (Documentation/arch/arm64/booting.rst) holds the
// magic "ARM\x64" at offset 0x38.
const (
	imageMagicOffset = 0x38
	imageHeaderLen   = 0x40
)

var imageMagic = []byte("ARM\x64")

// The EFI zboot header (drivers/firmware/efi/libstub/zboot-header.S): "MZ"
// at 0, "zimg" at 4, the payload's offset and size (little-endian uint32) at
// 8 and 12, and the compression's name, NUL-terminated, from 24.
const (
	zbootTypeOffset = 24
	zbootTypeMax    = 32
)

// maxImageSize bounds a decompressed kernel, against a corrupt or hostile
// file filling the run directory. arm64 Images are tens of MiB.
const maxImageSize = 512 << 20

// otherCompressions name compressed streams by their magic, for a clear
// error: the framework boots only an uncompressed Image.
var otherCompressions = []struct {
	magic []byte
	name  string
}{
	{[]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd"},
	{[]byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, "xz"},
	{[]byte("BZh"), "bzip2"},
	{[]byte{0x04, 0x22, 0x4d, 0x18}, "lz4"},
	{[]byte{0x02, 0x21, 0x4c, 0x18}, "lz4 (legacy)"},
	{[]byte{0x89, 'L', 'Z', 'O', 0x00}, "lzo"},
	{[]byte{0x5d, 0x00, 0x00}, "lzma"},
}

func isImageHeader(h []byte) bool {
	return len(h) >= imageHeaderLen && bytes.Equal(h[imageMagicOffset:imageMagicOffset+4], imageMagic)
}

// inspectKernel says what path is, and for a compressed arm64 kernel checks
// that what it holds is an Image. x86_64 kernels are not inspected.
func inspectKernel(path string, arch launcher.Arch) (KernelFormat, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	if arch != launcher.AArch64 {
		return KernelX86, nil
	}
	head := make([]byte, imageHeaderLen)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("kernel %s: %w", path, err)
	}
	head = head[:n]

	switch {
	case isImageHeader(head):
		return KernelImage, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		if err := checkPayload(path, "gzip", io.NewSectionReader(f, 0, 1<<62)); err != nil {
			return "", err
		}
		return KernelGzip, nil
	case len(head) >= zbootTypeOffset && bytes.HasPrefix(head, []byte("MZ")) && bytes.Equal(head[4:8], []byte("zimg")):
		payload, comp, err := zbootPayload(f, path)
		if err != nil {
			return "", err
		}
		if comp != "gzip" {
			return "", fmt.Errorf("kernel %s is an EFI zboot image compressed with %s; sonix-run can decompress only gzip, and Virtualization.framework boots only an uncompressed arm64 Image: build the kernel with an Image target (the NixOS default on aarch64), or with CONFIG_EFI_ZBOOT off or gzip", path, comp)
		}
		if err := checkPayload(path, "EFI zboot gzip payload", payload); err != nil {
			return "", err
		}
		return KernelZbootGzip, nil
	}
	for _, c := range otherCompressions {
		if bytes.HasPrefix(head, c.magic) {
			return "", fmt.Errorf("kernel %s is compressed with %s; Virtualization.framework boots only an uncompressed arm64 Image and sonix-run can decompress only gzip", path, c.name)
		}
	}
	return "", fmt.Errorf("kernel %s is not an arm64 Linux Image (no \"ARM\\x64\" magic at offset 0x38), nor a gzip'd or EFI zboot one", path)
}

// zbootPayload returns the compressed payload of an EFI zboot image and the
// name of its compression.
func zbootPayload(f *os.File, path string) (*io.SectionReader, string, error) {
	hdr := make([]byte, zbootTypeOffset+zbootTypeMax)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, "", fmt.Errorf("kernel %s: EFI zboot header: %w", path, err)
	}
	off := int64(binary.LittleEndian.Uint32(hdr[8:12]))
	size := int64(binary.LittleEndian.Uint32(hdr[12:16]))
	comp := hdr[zbootTypeOffset:]
	if i := bytes.IndexByte(comp, 0); i >= 0 {
		comp = comp[:i]
	}
	st, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("kernel %s: %w", path, err)
	}
	if off < int64(len(hdr)) || size == 0 || off+size > st.Size() {
		return nil, "", fmt.Errorf("kernel %s: EFI zboot header names a payload (offset %d, %d bytes) outside the %d-byte file", path, off, size, st.Size())
	}
	return io.NewSectionReader(f, off, size), string(comp), nil
}

// checkPayload decompresses the head of a gzip stream and checks that it is
// an arm64 Image.
func checkPayload(path, what string, r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("kernel %s: %s: %w", path, what, err)
	}
	zr.Multistream(false)
	head := make([]byte, imageHeaderLen)
	if _, err := io.ReadFull(zr, head); err != nil {
		return fmt.Errorf("kernel %s: %s: %w", path, what, err)
	}
	if !isImageHeader(head) {
		return fmt.Errorf("kernel %s: the %s does not hold an arm64 Linux Image (no \"ARM\\x64\" magic at offset 0x38)", path, what)
	}
	return nil
}

// decompressKernel writes the Image that src (of format) holds to dst.
func decompressKernel(src string, format KernelFormat, dst string) (err error) {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	var r io.Reader
	switch format {
	case KernelGzip:
		r = f
	case KernelZbootGzip:
		payload, _, err := zbootPayload(f, src)
		if err != nil {
			return err
		}
		r = payload
	default:
		return fmt.Errorf("kernel %s: cannot decompress a %s", src, format)
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("decompressing kernel %s: %w", src, err)
	}
	zr.Multistream(false) // a zboot payload may be followed by its size

	tmp, err := os.CreateTemp(filepath.Dir(dst), ".Image-*")
	if err != nil {
		return fmt.Errorf("decompressing kernel %s: %w", src, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, io.LimitReader(zr, maxImageSize+1))
	if err != nil {
		return fmt.Errorf("decompressing kernel %s: %w", src, err)
	}
	if n > maxImageSize {
		return fmt.Errorf("decompressing kernel %s: more than %d MiB; not a kernel", src, maxImageSize>>20)
	}
	head := make([]byte, imageHeaderLen)
	if _, err := tmp.ReadAt(head, 0); err != nil || !isImageHeader(head) {
		return fmt.Errorf("kernel %s: the decompressed data is not an arm64 Linux Image", src)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("decompressing kernel %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("decompressing kernel %s: %w", src, err)
	}
	return nil
}
