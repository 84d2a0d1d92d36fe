package qemu

import (
	"context"
	"strings"

	"github.com/sonix-run/sonix-run/kernelimage"
	"github.com/sonix-run/sonix-run/vmm"
)

// resolveKernel picks the file QEMU boots (vm.BootKernel). Under TCG an
// x86_64 bzImage spends about 40 % of a boot decompressing itself; its
// vmlinux, decompressed once into the kernel cache (about 2 s for Debian's
// xz kernel), boots through its PVH entry (-kernel of an ELF with the PVH
// note) with q35 and PCI unchanged. Under KVM the kernel decompresses
// itself faster than sonix-run extracts it, so a KVM run boots a vmlinux
// the cache already holds but does not extract one. Anything else, and a
// kernel the cache cannot turn into such an ELF, boots as given. In DryRun
// mode nothing is extracted: vm.BootKernel becomes vmm.ExtractedKernel (or
// CachedKernel), for the printed script to do it.
func resolveKernel(ctx context.Context, vm *vmm.VM, mode vmm.Mode, log vmm.Log) error {
	vm.BootKernel = ""
	if vm.Arch != vmm.X86_64 {
		return nil // QEMU boots an arm64 Image as it is; Image.gz it inflates itself, quickly
	}
	if vm.KernelAsIs {
		log.Detail("sonix-run: booting the kernel %s as it is (--kernel-format bzimage)", vm.Kernel)
		return nil
	}
	extract := vm.Accel != vmm.AccelKVM
	if mode == vmm.DryRun {
		// Only the headers are read: a dry run changes nothing, the
		// cache included.
		if info, err := kernelimage.Inspect(vm.Kernel); err == nil && info.Format == kernelimage.BzImage {
			vm.BootKernel = vmm.CachedKernel
			if extract {
				vm.BootKernel = vmm.ExtractedKernel
			}
		}
		return nil
	}
	dir, err := kernelimage.DefaultCacheDir()
	if err != nil {
		log.Detail("sonix-run: booting the kernel %s as it is, not through its PVH entry: %v", vm.Kernel, err)
		return nil
	}
	cache := kernelimage.NewCache(dir, kernelimage.DefaultMaxBytes)
	find := cache.BootableELF
	if !extract {
		find = cache.CachedELF
	}
	elf, note, err := find(ctx, vm.Kernel)
	if err != nil {
		return err // ctx ended
	}
	if elf == "" {
		if !extract && strings.Contains(note, kernelimage.ErrNotCached.Error()) {
			note += " (under KVM the kernel decompresses itself faster than sonix-run would extract it; `sonix-run extract-kernel IMAGE` fills the cache)"
		}
		log.Detail("sonix-run: booting the kernel as it is, not through its PVH entry: %s", note)
		return nil
	}
	if elf != vm.Kernel {
		vm.BootKernel = elf
	}
	log.Detail("sonix-run: booting %s uncompressed through its PVH entry: %s", elf, note)
	if vm.GDBPort == 0 { // --gdb boots with nokaslr anyway
		log.Detail("sonix-run: a kernel booted through its PVH entry runs without KASLR, at its link address (--kernel-format bzimage keeps KASLR)")
	}
	return nil
}
