package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sonix-run/sonix-run/kernelimage"
	"github.com/sonix-run/sonix-run/vmm"
)

// checkKernelImage tells at once when a --kernel is not a kernel image the
// guest's architecture boots (a text file, an initrd, the other arch's). A
// file that is a kernel image but one kernelimage cannot take apart (an old
// or odd bzImage) passes: the hypervisor may still boot it.
func checkKernelImage(flag, path string, arch vmm.Arch) error {
	info, err := kernelimage.Inspect(path)
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr):
		return fmt.Errorf("%s %s: %w", flag, path, pathErr.Err)
	case err != nil && !errors.Is(err, kernelimage.ErrUnknownFormat):
		return nil
	}
	switch arch {
	case vmm.X86_64:
		if err == nil && bootsOnX86(info) {
			return nil
		}
		return fmt.Errorf("%s %s: not an x86_64 kernel image (expected a bzImage, e.g. arch/x86/boot/bzImage, or a vmlinux ELF)%s", flag, path, whatItIs(info, err))
	case vmm.AArch64:
		if err == nil && info.Arch == kernelimage.AArch64 || err == nil && info.Format == kernelimage.Zboot && info.Arch == "" {
			return nil
		}
		return fmt.Errorf("%s %s: not an aarch64 kernel image (expected arch/arm64/boot/Image, Image.gz or an EFI zboot vmlinuz.efi)%s", flag, path, whatItIs(info, err))
	}
	return nil
}

// bootsOnX86: a bzImage (its arch is unknown before boot protocol 2.12) or
// an x86 ELF vmlinux.
func bootsOnX86(info kernelimage.Info) bool {
	switch info.Format {
	case kernelimage.BzImage:
		return true
	case kernelimage.ELF:
		return info.Arch == kernelimage.X86_64 || info.Arch == kernelimage.I386
	}
	return false
}

// whatItIs names a kernel of the wrong architecture, for the error.
func whatItIs(info kernelimage.Info, err error) string {
	if err != nil || info.Format == "" {
		return ""
	}
	arch := string(info.Arch)
	if arch == "" {
		arch = "an unknown architecture"
	}
	article := "a"
	if strings.ContainsAny(string(info.Format)[:1], "AEIOU") {
		article = "an"
	}
	return fmt.Sprintf("; it is %s %s for %s", article, info.Format, arch)
}

// modulesTree returns the /lib/modules directory inside dir: dir itself, or
// dir/lib/modules when dir is an INSTALL_MOD_PATH root (what
// `make modules_install INSTALL_MOD_PATH=dir` writes).
func modulesTree(dir string) string {
	inner := filepath.Join(dir, "lib", "modules")
	if st, err := os.Stat(inner); err == nil && st.IsDir() {
		return inner
	}
	return dir
}

// kernelVersion returns the release (what `uname -r` prints) a kernel
// image names: from an x86 bzImage's setup header, or the banner of an
// uncompressed vmlinux or Image; "" when it names none or is no kernel.
func kernelVersion(image string) string {
	info, err := kernelimage.Inspect(image)
	if err != nil {
		return ""
	}
	return info.Release
}

// ModulesWarning says, in one line, when the kernel p boots will find no
// modules of its own version in what is shared; "" when all is well, the
// version cannot be read, or the user asked for nothing of the kind
// (--kernel, --modules).
func ModulesWarning(p *Plan) string {
	return modulesWarning(p.VM.Kernel, p.Config.ModulesDir, p.Config.Kernel != "" || p.Config.ModulesDir != "")
}

func modulesWarning(kernel, modules string, relevant bool) string {
	release := kernelVersion(kernel)
	if release == "" || !relevant {
		return ""
	}
	if modules == "" {
		return fmt.Sprintf("sonix-run: warning: no --modules shared; kernel %s will find no modules outside its initrd", release)
	}
	if st, err := os.Stat(filepath.Join(modules, release)); err == nil && st.IsDir() {
		return ""
	}
	var have []string
	entries, _ := os.ReadDir(modules)
	for _, e := range entries {
		if e.IsDir() {
			have = append(have, e.Name())
		}
	}
	sort.Strings(have)
	return fmt.Sprintf("sonix-run: warning: --modules %s has no %s/ for kernel %s (it has: %s)", modules, release, release, orNone(have))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
