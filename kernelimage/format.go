// Package kernelimage knows Linux kernel image files: it tells their format,
// architecture, release and compression, decompresses them (an x86 bzImage to
// its ELF vmlinux, an arm64 Image.gz or EFI zboot image to its raw Image), and
// keeps the results in a content-addressed cache, so that a VM can boot the
// kernel without paying for its self-decompression on every boot.
//
// Everything here reads outside input: every read is bounded and a truncated
// or hostile file gives an error naming the file, never a panic or a huge
// allocation.
package kernelimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Format is the kind of kernel file.
type Format string

const (
	// BzImage is an x86 bzImage: real-mode setup, then a compressed
	// vmlinux behind a self-decompressor (Documentation/arch/x86/boot.rst).
	BzImage Format = "bzImage"
	// ELF is an uncompressed vmlinux.
	ELF Format = "ELF vmlinux"
	// Image is an uncompressed arm64 or riscv64 Image
	// (Documentation/arch/arm64/booting.rst).
	Image Format = "Image"
	// ImageGzip is a gzip'd Image (Image.gz); loaders decompress it.
	ImageGzip Format = "Image.gz"
	// Zboot is an EFI zboot image (vmlinuz.efi): a small EFI program that
	// carries the compressed Image (drivers/firmware/efi/libstub/zboot-header.S).
	Zboot Format = "EFI zboot"
)

// Arch is a CPU architecture, spelt as vmm.Arch spells it.
type Arch string

const (
	X86_64  Arch = "x86_64"
	I386    Arch = "i386"
	AArch64 Arch = "aarch64"
	RISCV64 Arch = "riscv64"
)

// Compression is how a kernel is compressed.
type Compression string

const (
	None  Compression = "none"
	Gzip  Compression = "gzip"
	Xz    Compression = "xz"
	Zstd  Compression = "zstd"
	Lzma  Compression = "lzma"
	Lz4   Compression = "lz4"
	Bzip2 Compression = "bzip2"
	// Lzo is recognised for a clear error; there is no decompressor for it.
	Lzo Compression = "lzo"
)

// Info is what Inspect learns about a kernel file.
type Info struct {
	Path   string
	Size   int64
	Format Format
	// Arch is "" when the file does not say (a bzImage older than boot
	// protocol 2.12).
	Arch Arch
	// Release is what `uname -r` prints, e.g. "6.1.0-28-amd64": from the
	// setup header of a bzImage, from the "Linux version" banner of an
	// uncompressed ELF or Image. "" when the file does not carry it where it
	// can be read without decompressing (Image.gz, zboot: see Uncompress).
	Release string
	// Compression of the kernel proper; None for an ELF or Image.
	Compression Compression
	// PVH says whether an ELF carries the Xen PVH entry note
	// (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU needs to boot it with -kernel;
	// PVHEntry is that entry's physical address.
	PVH      bool
	PVHEntry uint64
	// BootProtocol is a bzImage's boot protocol version, e.g. 0x020f.
	BootProtocol uint16
	// PayloadOffset and PayloadLength locate the compressed kernel inside
	// a bzImage or zboot image.
	PayloadOffset int64
	PayloadLength int64
}

// Compressed reports whether the kernel must be decompressed to get an
// uncompressed ELF or Image.
func (i Info) Compressed() bool { return i.Compression != None && i.Compression != "" }

// ErrUnknownFormat is wrapped by Inspect's error for a file that is no kernel
// image this package knows.
var ErrUnknownFormat = errors.New("not a Linux kernel image")

// ErrUnsupported is wrapped by errors for images this package recognises but
// cannot decompress (lzo, an xz filter it lacks).
var ErrUnsupported = errors.New("unsupported")

const expectedFormats = "expected an x86 bzImage, an ELF vmlinux, an arm64 or riscv64 Image, an Image.gz or an EFI zboot image"

// Inspect reads the headers of the kernel image at path and says what it is.
// It reads little: the headers, the setup header's version string, and for
// an uncompressed ELF or Image a scan for the version banner.
func Inspect(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("kernel image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("kernel image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("kernel image %s: not a regular file", path)
	}
	info, err := inspect(f, st.Size())
	if err != nil {
		return Info{}, fmt.Errorf("kernel image %s: %w", path, err)
	}
	info.Path = path
	if info.Format == ELF || info.Format == Image {
		info.Release, err = scanRelease(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			return Info{}, fmt.Errorf("kernel image %s: %w", path, err)
		}
	}
	return info, nil
}

// headLen is how much of a file inspect reads first: the bzImage setup
// header ends before 0x280, the arm64 and zboot headers before 0x40.
const headLen = 0x280

// inspect tells the format from r's headers; size is r's length. It does
// not scan for the banner (Inspect does, for files).
func inspect(r io.ReaderAt, size int64) (Info, error) {
	head := make([]byte, headLen)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Info{}, err
	}
	head = head[:n]
	info := Info{Size: size}
	switch {
	case bytes.HasPrefix(head, []byte(elfMagic)):
		e, err := parseELF(r, size)
		if err != nil {
			return Info{}, err
		}
		info.Format, info.Arch, info.Compression = ELF, e.arch, None
		info.PVH, info.PVHEntry = e.pvh, e.pvhEntry
		return info, nil
	case len(head) >= 0x206 && string(head[0x202:0x206]) == "HdrS":
		return parseBzImage(r, size, head, info)
	case len(head) >= 8 && bytes.HasPrefix(head, []byte("MZ")) && string(head[4:8]) == "zimg":
		return parseZboot(r, size, head, info)
	case len(head) >= imageHeaderLen && imageArch(head) != "":
		info.Format, info.Arch, info.Compression = Image, imageArch(head), None
		return info, nil
	case bytes.HasPrefix(head, gzipMagic):
		// Image.gz: the arch is in the decompressed header, which a
		// gzip stream yields cheaply.
		arch, err := compressedImageArch(Gzip, io.NewSectionReader(r, 0, size))
		if err != nil {
			return Info{}, fmt.Errorf("gzip'd file: %w", err)
		}
		info.Format, info.Arch, info.Compression = ImageGzip, arch, Gzip
		return info, nil
	}
	if c := detectCompression(head); c != None {
		return Info{}, fmt.Errorf("%w: a bare %s stream (%s; compressed kernels are recognised only as a bzImage, an Image.gz or an EFI zboot image)", ErrUnknownFormat, c, expectedFormats)
	}
	return Info{}, fmt.Errorf("%w (%s)", ErrUnknownFormat, expectedFormats)
}

// The x86 setup header (Documentation/arch/x86/boot.rst), offsets from the
// start of the file.
const (
	setupSectsOff    = 0x1f1
	bootFlagOff      = 0x1fe
	versionOff       = 0x206
	kernelVersionOff = 0x20e
	xloadflagsOff    = 0x236
	payloadOffsetOff = 0x248
	payloadLengthOff = 0x24c
	xlfKernel64      = 1 << 0
	// maxVersionString bounds the setup header's version string
	// ("6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP ...").
	maxVersionString = 512
)

func parseBzImage(r io.ReaderAt, size int64, head []byte, info Info) (Info, error) {
	le := binary.LittleEndian
	info.Format = BzImage
	if len(head) < headLen {
		return Info{}, fmt.Errorf("bzImage setup header truncated (%d bytes, want %d)", len(head), headLen)
	}
	if le.Uint16(head[bootFlagOff:]) != 0xaa55 {
		return Info{}, fmt.Errorf("bzImage has \"HdrS\" but no 0xAA55 boot flag at 0x%x", bootFlagOff)
	}
	info.BootProtocol = le.Uint16(head[versionOff:])
	if info.BootProtocol < 0x0208 {
		return Info{}, fmt.Errorf("%w: bzImage boot protocol %d.%02d has no payload fields (need 2.08 or later, Linux 2.6.26+)", ErrUnsupported, info.BootProtocol>>8, info.BootProtocol&0xff)
	}
	switch {
	case info.BootProtocol >= 0x020c && head[xloadflagsOff]&xlfKernel64 != 0:
		info.Arch = X86_64
	case info.BootProtocol >= 0x020c:
		info.Arch = I386
	}
	if v := le.Uint16(head[kernelVersionOff:]); v != 0 {
		release, err := setupVersion(r, int64(v)+0x200, size)
		if err != nil {
			return Info{}, err
		}
		info.Release = release
	}
	setupSects := int64(head[setupSectsOff])
	if setupSects == 0 {
		setupSects = 4 // the boot protocol's rule for very old images
	}
	// The payload offset counts from the protected-mode code, which
	// follows the boot sector and setup_sects sectors of setup.
	pmStart := (setupSects + 1) * 512
	info.PayloadOffset = pmStart + int64(le.Uint32(head[payloadOffsetOff:]))
	info.PayloadLength = int64(le.Uint32(head[payloadLengthOff:]))
	if info.PayloadLength < 8 || info.PayloadOffset+info.PayloadLength > size {
		return Info{}, fmt.Errorf("bzImage setup header names a payload (offset %d, %d bytes) outside the %d-byte file", info.PayloadOffset, info.PayloadLength, size)
	}
	magic := make([]byte, 8)
	if _, err := r.ReadAt(magic, info.PayloadOffset); err != nil {
		return Info{}, fmt.Errorf("bzImage payload: %w", err)
	}
	info.Compression = detectCompression(magic)
	if info.Compression == None {
		return Info{}, fmt.Errorf("bzImage payload at offset %d starts with % x, no compression this package knows (gzip, xz, zstd, lzma, lz4, bzip2)", info.PayloadOffset, magic[:6])
	}
	return info, nil
}

// setupVersion reads the NUL-terminated version string at off and returns
// its first word, the release.
func setupVersion(r io.ReaderAt, off, size int64) (string, error) {
	if off >= size {
		return "", fmt.Errorf("bzImage kernel_version points at offset %d, past the %d-byte file", off, size)
	}
	buf := make([]byte, min(maxVersionString, size-off))
	n, err := r.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("bzImage version string: %w", err)
	}
	s := buf[:n]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	release, _, _ := strings.Cut(string(s), " ")
	if !validRelease(release) {
		// Boot loaders ignore the string; so does this package, but
		// it cannot name the release.
		return "", nil
	}
	return release, nil
}

// validRelease reports whether s can be a kernel release: 1 to 64
// printable non-space ASCII characters (UTS release fits 64 bytes).
func validRelease(s string) bool {
	if len(s) == 0 || len(s) > maxRelease {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

const maxRelease = 64

// The arm64 and riscv64 Image headers are 64 bytes: arm64's magic
// "ARM\x64" is at 0x38; riscv64's "RSC\x05" at 0x38 (its older "RISCV\0\0\0"
// at 0x30).
const imageHeaderLen = 0x40

func imageArch(h []byte) Arch {
	if len(h) < imageHeaderLen {
		return ""
	}
	switch {
	case string(h[0x38:0x3c]) == "ARM\x64":
		return AArch64
	case string(h[0x38:0x3c]) == "RSC\x05" || string(h[0x30:0x38]) == "RISCV\x00\x00\x00":
		return RISCV64
	}
	return ""
}

// The EFI zboot header: "MZ" at 0, "zimg" at 4, the payload's offset and
// size at 8 and 12 (the size excludes the length some compressors append),
// the compression's name, NUL-terminated, at 24. The PE header's offset is
// at 0x3c, as in every PE file; its machine field names the architecture.
const (
	zbootTypeOff = 24
	zbootTypeMax = 32
	peOffsetOff  = 0x3c
)

func parseZboot(r io.ReaderAt, size int64, head []byte, info Info) (Info, error) {
	le := binary.LittleEndian
	info.Format = Zboot
	if len(head) < 0x40 {
		return Info{}, fmt.Errorf("EFI zboot header truncated (%d bytes)", len(head))
	}
	info.PayloadOffset = int64(le.Uint32(head[8:]))
	info.PayloadLength = int64(le.Uint32(head[12:]))
	if info.PayloadOffset < 0x40 || info.PayloadLength < 8 || info.PayloadOffset+info.PayloadLength > size {
		return Info{}, fmt.Errorf("EFI zboot header names a payload (offset %d, %d bytes) outside the %d-byte file", info.PayloadOffset, info.PayloadLength, size)
	}
	name := head[zbootTypeOff : zbootTypeOff+zbootTypeMax]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	magic := make([]byte, 8)
	if _, err := r.ReadAt(magic, info.PayloadOffset); err != nil {
		return Info{}, fmt.Errorf("EFI zboot payload: %w", err)
	}
	info.Compression = detectCompression(magic)
	if info.Compression == None {
		return Info{}, fmt.Errorf("EFI zboot payload (header says %q) starts with % x, no compression this package knows", name, magic[:6])
	}
	if pe := int64(le.Uint32(head[peOffsetOff:])); pe >= 0x40 && pe+6 <= size {
		sig := make([]byte, 6)
		if _, err := r.ReadAt(sig, pe); err == nil && string(sig[:4]) == "PE\x00\x00" {
			switch le.Uint16(sig[4:]) {
			case 0xaa64:
				info.Arch = AArch64
			case 0x5064:
				info.Arch = RISCV64
			case 0x8664:
				info.Arch = X86_64
			}
		}
	}
	if info.Arch == "" && cheapToPeek[info.Compression] {
		// No PE header names it: the Image header inside does, and its
		// first bytes come cheaply out of these streams (xz and lzma
		// would allocate their whole dictionary first).
		arch, err := compressedImageArch(info.Compression, io.NewSectionReader(r, info.PayloadOffset, info.PayloadLength))
		if err != nil {
			return Info{}, fmt.Errorf("EFI zboot payload: %w", err)
		}
		info.Arch = arch
	}
	return info, nil
}

// cheapToPeek are the compressions whose decoders yield a stream's first
// bytes without allocating much.
var cheapToPeek = map[Compression]bool{Gzip: true, Zstd: true, Lz4: true, Bzip2: true}
