package kernelimage

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// maxUncompressed bounds a decompressed kernel, against a corrupt or hostile
// image filling the disk: vmlinux files are tens of MiB, 66 MiB for
// Debian's generic x86_64 kernel.
const maxUncompressed = 512 << 20

// maxDict bounds the dictionary an xz or lzma stream may ask for, which the
// decoder allocates up front; the kernel's own build uses 32 or 64 MiB. A
// variable only so that fuzzing can lower it.
var maxDict = 128 << 20

var (
	gzipMagic       = []byte{0x1f, 0x8b}
	xzMagic         = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	zstdMagic       = []byte{0x28, 0xb5, 0x2f, 0xfd}
	lz4LegacyMagic  = []byte{0x02, 0x21, 0x4c, 0x18}
	lz4FrameMagic   = []byte{0x04, 0x22, 0x4d, 0x18}
	lzoMagic        = []byte{0x89, 'L', 'Z', 'O', 0x00}
	lzmaAloneMagic  = []byte{0x5d, 0x00, 0x00} // properties lc=3 lp=0 pb=2, dictionary < 16 MiB·256
	bzip2MagicBytes = []byte("BZh")
)

// detectCompression names the compression whose magic starts b; None when
// it is none of those the kernel's build uses.
func detectCompression(b []byte) Compression {
	switch {
	case bytes.HasPrefix(b, gzipMagic):
		return Gzip
	case bytes.HasPrefix(b, xzMagic):
		return Xz
	case bytes.HasPrefix(b, zstdMagic):
		return Zstd
	case bytes.HasPrefix(b, lz4LegacyMagic), bytes.HasPrefix(b, lz4FrameMagic):
		return Lz4
	case bytes.HasPrefix(b, lzoMagic):
		return Lzo
	case bytes.HasPrefix(b, lzmaAloneMagic):
		return Lzma
	case len(b) >= 4 && bytes.HasPrefix(b, bzip2MagicBytes) && b[3] >= '1' && b[3] <= '9':
		return Bzip2
	}
	return None
}

// decompressor returns a reader of what the compressed stream in src
// holds; close releases the decoder's resources. src must hold the stream
// and nothing after it: the gzip, xz, lzma and lz4 readers stop at the
// stream's end, but the zstd and bzip2 ones read on and fail on the length
// the kernel's build appends, so callers cut it off.
func decompressor(c Compression, src io.Reader) (r io.Reader, close func(), err error) {
	nop := func() {}
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(bufio.NewReader(src))
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		zr.Multistream(false)
		return zr, func() { zr.Close() }, nil
	case Xz:
		xr, err := newXZReader(src)
		if err != nil {
			return nil, nil, err
		}
		return xr, nop, nil
	case Zstd:
		// One goroutine: a kernel is a single frame, and the decoder's
		// goroutines would outlive an abandoned read until close.
		zr, err := zstd.NewReader(src,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(maxUncompressed),
			zstd.WithDecoderMaxWindow(uint64(maxDict)))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return &zstdReader{zr}, zr.Close, nil
	case Lzma:
		lr, err := lzma.ReaderConfig{DictCap: maxDict}.NewReader(bufio.NewReader(src))
		if err != nil {
			return nil, nil, fmt.Errorf("lzma: %w", err)
		}
		return lr, nop, nil
	case Lz4:
		// pierrec/lz4 reads the legacy frame (magic 0x184C2102) the
		// kernel's build writes, with its trailing length.
		return lz4.NewReader(src), nop, nil
	case Bzip2:
		return bzip2.NewReader(bufio.NewReader(src)), nop, nil
	case Lzo:
		return nil, nil, fmt.Errorf("%w: lzo (no well-kept Go decompressor; build the kernel with CONFIG_KERNEL_GZIP, _XZ or _ZSTD)", ErrUnsupported)
	}
	return nil, nil, fmt.Errorf("%w: compression %q", ErrUnsupported, c)
}

// zstdReader names zstd in the decoder's errors.
type zstdReader struct{ d *zstd.Decoder }

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("zstd: %w", err)
	}
	return n, err
}

// compressedImageArch decompresses the first 64 bytes of a compressed
// stream and returns the architecture its Image header names.
func compressedImageArch(c Compression, src io.Reader) (Arch, error) {
	r, closeFn, err := decompressor(c, src)
	if err != nil {
		return "", err
	}
	defer closeFn()
	head := make([]byte, imageHeaderLen)
	if _, err := io.ReadFull(r, head); err != nil {
		return "", fmt.Errorf("%s: %w", c, err)
	}
	arch := imageArch(head)
	if arch == "" {
		return "", fmt.Errorf("%w: the %s data is not an arm64 or riscv64 Linux Image (no \"ARM\\x64\" or \"RSC\\x05\" magic at offset 0x38)", ErrUnknownFormat, c)
	}
	return arch, nil
}
