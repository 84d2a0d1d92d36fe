package kernelimage

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrNotCompressed is wrapped by Uncompress's error for an ELF or Image,
// which need no decompressing.
var ErrNotCompressed = errors.New("already uncompressed")

// Uncompress writes the uncompressed kernel that the image at imagePath
// holds to dstPath: for a bzImage its ELF vmlinux, for an Image.gz or EFI
// zboot image the raw Image. The file appears under dstPath complete or not
// at all (a temporary file in the same directory is synced and renamed). It
// returns what the image is and what was written, verified: an ELF whose
// headers parse (PVH says whether it carries the PVH note), or an Image
// whose header names its architecture.
func Uncompress(ctx context.Context, imagePath, dstPath string) (src, out Info, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(dstPath), ".tmp-"+filepath.Base(dstPath)+"-*")
	if err != nil {
		return Info{}, Info{}, fmt.Errorf("uncompressing kernel %s: %w", imagePath, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	src, out, err = uncompressTo(ctx, imagePath, tmp)
	if err != nil {
		return Info{}, Info{}, err
	}
	// A kernel is no secret, and the VMM may run as another user.
	if err := tmp.Chmod(0o644); err != nil {
		return Info{}, Info{}, fmt.Errorf("uncompressing kernel %s: %w", imagePath, err)
	}
	if err := tmp.Close(); err != nil {
		return Info{}, Info{}, fmt.Errorf("uncompressing kernel %s: %w", imagePath, err)
	}
	if err := os.Rename(tmp.Name(), dstPath); err != nil {
		return Info{}, Info{}, fmt.Errorf("uncompressing kernel %s: %w", imagePath, err)
	}
	out.Path = dstPath
	return src, out, nil
}

// uncompressTo decompresses the kernel at imagePath into dst (empty, at
// offset 0), syncs dst and verifies what it holds. out.Path is dst's name.
func uncompressTo(ctx context.Context, imagePath string, dst *os.File) (src, out Info, err error) {
	f, err := os.Open(imagePath)
	if err != nil {
		return Info{}, Info{}, fmt.Errorf("kernel image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, Info{}, fmt.Errorf("kernel image: %w", err)
	}
	return uncompressFile(ctx, f, imagePath, st.Size(), dst)
}

// imageError marks an error caused by what the image holds, not by writing
// the output or by a cancelled context: the cache remembers those.
type imageError struct{ err error }

func (e *imageError) Error() string { return e.err.Error() }
func (e *imageError) Unwrap() error { return e.err }

// uncompressFile is uncompressTo on an open image f of size bytes.
func uncompressFile(ctx context.Context, f io.ReaderAt, imagePath string, size int64, dst *os.File) (src, out Info, err error) {
	fail := func(err error) (Info, Info, error) {
		return Info{}, Info{}, &imageError{fmt.Errorf("kernel image %s: %w", imagePath, err)}
	}
	src, err = inspect(f, size)
	if err != nil {
		return fail(err)
	}
	src.Path = imagePath

	var payload *io.SectionReader
	expected := int64(-1) // the uncompressed size, when the image says
	switch src.Format {
	case ELF, Image:
		return fail(fmt.Errorf("%w: it is an %s", ErrNotCompressed, src.Format))
	case BzImage:
		// The build appends the uncompressed length (le32) to every
		// payload; gzip's own trailer ends with it too.
		trailer := make([]byte, 4)
		if _, err := f.ReadAt(trailer, src.PayloadOffset+src.PayloadLength-4); err != nil {
			return fail(fmt.Errorf("bzImage payload trailer: %w", err))
		}
		expected = int64(binary.LittleEndian.Uint32(trailer))
		if expected > maxUncompressed {
			return fail(fmt.Errorf("bzImage payload says it holds %d MiB (at most %d MiB expected); not a kernel", expected>>20, maxUncompressed>>20))
		}
		n := src.PayloadLength
		if src.Compression != Gzip {
			n -= 4
		}
		payload = io.NewSectionReader(f, src.PayloadOffset, n)
	case Zboot:
		payload = io.NewSectionReader(f, src.PayloadOffset, src.PayloadLength)
	case ImageGzip:
		payload = io.NewSectionReader(f, 0, size)
	default:
		return fail(fmt.Errorf("cannot decompress a %s", src.Format))
	}

	r, closeDecoder, err := decompressor(src.Compression, &ctxReader{ctx: ctx, r: payload})
	if err != nil {
		if ctx.Err() != nil {
			return Info{}, Info{}, ctx.Err()
		}
		return fail(err)
	}
	defer closeDecoder()
	var release releaseScanner
	dstW := &writeErrors{w: dst}
	bw := bufio.NewWriterSize(dstW, 1<<20)
	n, err := io.Copy(io.MultiWriter(bw, &release), io.LimitReader(r, maxUncompressed+1))
	if err != nil {
		if ctx.Err() != nil {
			return Info{}, Info{}, ctx.Err()
		}
		if dstW.err != nil {
			return Info{}, Info{}, fmt.Errorf("writing %s: %w", dst.Name(), dstW.err)
		}
		return fail(fmt.Errorf("decompressing its %s %s payload: %w", src.Compression, src.Format, err))
	}
	if n > maxUncompressed {
		return fail(fmt.Errorf("decompresses to more than %d MiB; not a kernel", maxUncompressed>>20))
	}
	if expected >= 0 && n != expected {
		return fail(fmt.Errorf("its %s payload decompressed to %d bytes, but the image says %d: corrupt", src.Compression, n, expected))
	}
	if err := bw.Flush(); err != nil {
		return Info{}, Info{}, fmt.Errorf("writing %s: %w", dst.Name(), err)
	}
	if err := dst.Sync(); err != nil {
		return Info{}, Info{}, fmt.Errorf("writing %s: %w", dst.Name(), err)
	}

	got, err := verifyUncompressed(dst, n, src)
	if err != nil {
		return fail(err)
	}
	got.Path, got.Release = dst.Name(), release.release
	if src.Release != "" && got.Release != "" && src.Release != got.Release {
		return fail(fmt.Errorf("its setup header says release %s, the decompressed kernel's banner %s", src.Release, got.Release))
	}
	if got.Release == "" {
		got.Release = src.Release
	}
	return src, got, nil
}

// writeErrors remembers the error its writer returned, to tell a full disk
// from a corrupt image when a copy fails.
type writeErrors struct {
	w   io.Writer
	err error
}

func (w *writeErrors) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// verifyUncompressed checks that the size bytes of r are what an image of
// src's format decompresses to: a bzImage an ELF vmlinux, the others an
// Image of the same architecture.
func verifyUncompressed(r io.ReaderAt, size int64, src Info) (Info, error) {
	out := Info{Size: size, Compression: None}
	if src.Format == BzImage {
		e, err := parseELF(r, size)
		if err != nil {
			return Info{}, fmt.Errorf("the decompressed bzImage payload is not a valid ELF vmlinux: %w", err)
		}
		if e.arch != X86_64 && e.arch != I386 {
			return Info{}, fmt.Errorf("the decompressed bzImage payload is an ELF for machine %d, not x86", e.machine)
		}
		out.Format, out.Arch, out.PVH, out.PVHEntry = ELF, e.arch, e.pvh, e.pvhEntry
		return out, nil
	}
	head := make([]byte, imageHeaderLen)
	if _, err := r.ReadAt(head, 0); err != nil {
		return Info{}, fmt.Errorf("the decompressed %s is no Linux Image: %w", src.Format, noEOF(err))
	}
	arch := imageArch(head)
	if arch == "" {
		return Info{}, fmt.Errorf("the decompressed %s is no Linux Image (no arm64 or riscv64 magic at offset 0x38)", src.Format)
	}
	if src.Arch != "" && arch != src.Arch {
		return Info{}, fmt.Errorf("the %s says %s but holds an %s Image", src.Format, src.Arch, arch)
	}
	out.Format, out.Arch = Image, arch
	return out, nil
}

// ctxReader ends a read of r once ctx is done, so that a cancelled run
// stops decompressing within one buffer.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
