package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/sonix-run/sonix-run/kconfig"
)

const kconfigUsage = `Usage: sonix-run kconfig [--arch x86_64|aarch64]

Print the kernel configuration fragment a kernel needs to boot a NixOS
system under sonix-run without its initrd's modules: the virtio, virtio-fs,
console and tmpfs drivers built in, and what the agent, pvpanic, the gdb
stub, --vlan, --state and --dump use, each group commented. Merge it into a
kernel tree's configuration:

  scripts/kconfig/merge_config.sh .config <(sonix-run kconfig)
  make olddefconfig && make -j$(nproc) bzImage

sonix-run checks a --kernel against the same list before booting it.

Options:
`

func cmdKconfig(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("kconfig", kconfigUsage)
	arch := fs.String("arch", hostArch(), "the guest's `ARCH`: x86_64 or aarch64")
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 0 {
		return usageError(stderr, " kconfig", "expected no arguments")
	}
	frag, err := kconfig.Fragment(*arch)
	if err != nil {
		return usageError(stderr, " kconfig", "--arch %s: %v", *arch, err)
	}
	fmt.Fprint(stdout, frag)
	return exitOK
}

// hostArch is this machine's architecture, named as Nix does.
func hostArch() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64"
	}
	return "x86_64"
}
