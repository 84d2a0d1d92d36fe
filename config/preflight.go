package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sonix-run/sonix-run/kconfig"
	"github.com/sonix-run/sonix-run/kernelimage"
)

// preflight checks a --kernel that is not the system's own kernel: the
// system's initrd carries the system kernel's modules, useless to another
// release, so the new kernel must have the boot-critical drivers built in.
// It reads the kernel's configuration (embedded in the image with
// CONFIG_IKCONFIG, a .config beside a build tree's image, or the modules
// tree's modules.builtin) and refuses, before anything starts, a kernel
// that would die in stage 1, saying which options are missing or modular
// and the command that fixes them. Config.Force boots it anyway. say
// writes a warning line.
func Preflight(ctx context.Context, p *Plan, say func(format string, args ...any)) error {
	if p.Config.Kernel == "" {
		return nil
	}
	systemKernel := p.SystemKernel
	mine, err := kernelimage.Inspect(p.VM.Kernel)
	if err != nil {
		return nil // checkKernelImage has said what it could
	}
	if sys, err := kernelimage.Inspect(systemKernel); err == nil && sys.Release != "" && sys.Release == mine.Release {
		return nil // the same release: the initrd's modules fit it
	}
	k, how := kernelConfig(ctx, p.VM.Kernel, p.Config.ModulesDir, mine.Release)
	if k == nil {
		say("sonix-run: warning: --kernel %s: its configuration cannot be read (%s), so it was not checked; build it with CONFIG_IKCONFIG=y, or see `sonix-run kconfig`", p.Config.Kernel, how)
		return nil
	}
	r, err := kconfig.Check(string(p.VM.Arch), k)
	if err != nil {
		return nil
	}
	text := strings.TrimRight(r.String(), "\n")
	if text == "" {
		return nil
	}
	if !r.Fatal() {
		say("sonix-run: --kernel %s (%s):\n%s", p.Config.Kernel, how, text)
		return nil
	}
	if p.Config.Force {
		say("sonix-run: --kernel %s (%s), booting anyway (--force):\n%s", p.Config.Kernel, how, text)
		return nil
	}
	return fmt.Errorf("--kernel %s will not boot this system imageless (%s):\n%s\n(--force boots it anyway)", p.Config.Kernel, how, text)
}

// kernelConfig finds the configuration of the kernel at image: embedded in
// it, a build tree's .config, or its modules tree; how says which.
func kernelConfig(ctx context.Context, image, modules, release string) (*kconfig.Kernel, string) {
	var tried []string
	if dir, err := kernelimage.DefaultCacheDir(); err == nil {
		e, err := kernelimage.NewCache(dir, kernelimage.DefaultMaxBytes).Uncompressed(ctx, image)
		if err == nil {
			if data, err := os.ReadFile(e.Path); err == nil {
				k, err := kconfig.FromImage(data)
				if err == nil {
					return k, "its embedded configuration"
				}
				if !errors.Is(err, kconfig.ErrNoEmbeddedConfig) {
					tried = append(tried, err.Error())
				} else {
					tried = append(tried, "no embedded configuration")
				}
			}
		} else {
			tried = append(tried, err.Error())
		}
	}
	// A build tree: arch/*/boot/bzImage or Image, with .config at the top.
	if cfg := filepath.Join(filepath.Dir(image), "..", "..", "..", ".config"); fileExists(cfg) {
		if k, err := kconfig.FromConfigFile(cfg); err == nil {
			return k, filepath.Clean(cfg)
		}
	}
	if modules != "" && release != "" {
		dir := filepath.Join(modules, release)
		if k, err := kconfig.FromModulesTree(dir); err == nil {
			return k, filepath.Join(dir, "modules.builtin")
		}
	}
	tried = append(tried, "no .config beside it, no modules.builtin in --modules")
	return nil, strings.Join(tried, "; ")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
