package vz

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/sonix-run/sonix-run/kernelimage"
	"github.com/sonix-run/sonix-run/vmm"
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
	// gzip'd arm64 Image; kernelZboot names the other compressions.
	KernelZbootGzip KernelFormat = "EFI zboot, gzip"
	// KernelX86 is an x86_64 kernel, passed to the framework as it is.
	KernelX86 KernelFormat = "x86_64 kernel"
)

const zbootPrefix = "EFI zboot, "

// kernelZboot is the format of an EFI zboot image whose payload is
// compressed with c (gzip, zstd, xz, lzma, lz4 or bzip2).
func kernelZboot(c kernelimage.Compression) KernelFormat {
	return KernelFormat(zbootPrefix + string(c))
}

// Compressed reports whether the kernel must be decompressed before booting.
func (f KernelFormat) Compressed() bool {
	return f == KernelGzip || strings.HasPrefix(string(f), zbootPrefix)
}

// inspectKernel says what path is; for a compressed arm64 kernel package
// kernelimage has checked, where it is cheap, that it holds an arm64 Image
// (Prepare checks what it decompresses in any case). x86_64 kernels are not
// inspected.
func inspectKernel(path string, arch vmm.Arch) (KernelFormat, error) {
	if arch != vmm.AArch64 {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("kernel: %w", err)
		}
		f.Close()
		return KernelX86, nil
	}
	info, err := kernelimage.Inspect(path)
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr):
		return "", fmt.Errorf("kernel: %w", pathErr)
	case errors.Is(err, kernelimage.ErrUnknownFormat):
		return "", fmt.Errorf("%w; Virtualization.framework boots an arm64 Image, and sonix-run decompresses an Image.gz or an EFI zboot image for it", err)
	case err != nil:
		return "", err
	}
	// A zboot image whose PE header names no machine, compressed with xz
	// or lzma, is checked only when Prepare decompresses it.
	unknownZboot := info.Format == kernelimage.Zboot && info.Arch == ""
	if info.Arch != kernelimage.AArch64 && !unknownZboot {
		return "", fmt.Errorf("kernel %s is %s for %s; Virtualization.framework on this Mac boots only arm64 kernels", path, describe(info), orUnknownArch(info.Arch))
	}
	switch info.Format {
	case kernelimage.Image:
		return KernelImage, nil
	case kernelimage.ImageGzip:
		return KernelGzip, nil
	case kernelimage.Zboot:
		if info.Compression == kernelimage.Lzo {
			return "", fmt.Errorf("kernel %s is an EFI zboot image compressed with lzo, which sonix-run cannot decompress, and Virtualization.framework boots only an uncompressed arm64 Image: build the kernel with CONFIG_KERNEL_GZIP, _ZSTD or _XZ, or with an Image target", path)
		}
		return kernelZboot(info.Compression), nil
	}
	return "", fmt.Errorf("kernel %s is %s; Virtualization.framework boots an arm64 Image (arch/arm64/boot/Image), not an ELF vmlinux", path, describe(info))
}

func describe(info kernelimage.Info) string {
	if strings.ContainsAny(string(info.Format)[:1], "AEIOU") {
		return "an " + string(info.Format)
	}
	return "a " + string(info.Format)
}

func orUnknownArch(a kernelimage.Arch) string {
	if a == "" {
		return "an unknown architecture"
	}
	return string(a)
}

// decompressKernel writes the Image that src (of format) holds to dst,
// which appears complete or not at all.
func decompressKernel(src string, format KernelFormat, dst string) error {
	if !format.Compressed() {
		return fmt.Errorf("kernel %s: cannot decompress a %s", src, format)
	}
	_, out, err := kernelimage.Uncompress(context.Background(), src, dst)
	if err != nil {
		return err
	}
	if out.Arch != kernelimage.AArch64 {
		os.Remove(dst)
		return fmt.Errorf("kernel %s holds an Image for %s, not arm64", src, out.Arch)
	}
	return nil
}
