// Package kconfig knows what a Linux kernel needs to boot a NixOS system
// imageless under sonix-run. It writes that as a config fragment (Fragment,
// for scripts/kconfig/merge_config.sh) and checks a kernel against it before
// a boot (Check), from the kernel's embedded or shipped config, or from its
// modules tree's modules.builtin and modules.order.
//
// With --kernel the system's initrd still carries the system kernel's
// modules, which the new kernel cannot load: everything the boot needs must
// be built in, so the fragment sets every option to y.
package kconfig

import (
	"fmt"
	"strings"
)

// Arches are the architectures Fragment and Check know, as sonix-run names
// them.
var Arches = []string{x86_64, aarch64}

// checkArch returns an error naming the supported architectures unless arch
// is one of them.
func checkArch(arch string) error {
	for _, a := range Arches {
		if a == arch {
			return nil
		}
	}
	return fmt.Errorf("kconfig: unsupported architecture %q (want %s)", arch, strings.Join(Arches, " or "))
}

// Fragment returns the config fragment for arch: one CONFIG_X=y line per
// option, in groups, each after a comment saying why it is needed.
func Fragment(arch string) (string, error) {
	if err := checkArch(arch); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# sonix-run kernel config fragment for %s (sonix-run kconfig --arch %s).\n", arch, arch)
	b.WriteString("# Everything is built in: with --kernel, the system's initrd carries the\n")
	b.WriteString("# system kernel's modules, which this kernel cannot load. Merge it with:\n")
	fmt.Fprintf(&b, "#   %s\n", FixCommand(arch))
	for _, g := range groups {
		var lines []string
		for _, o := range g.options {
			if o.forArch(arch) {
				lines = append(lines, "CONFIG_"+o.name+"=y")
			}
		}
		if len(lines) == 0 {
			continue
		}
		b.WriteString("\n")
		for _, w := range g.why {
			b.WriteString("# " + w + "\n")
		}
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	return b.String(), nil
}

// FixCommand is the shell command (bash), run in a kernel tree, that merges
// the fragment into its .config. merge_config.sh then runs make alldefconfig
// itself and names every option that did not end up as asked.
func FixCommand(arch string) string {
	env := ""
	if arch == aarch64 {
		env = "ARCH=arm64 "
	}
	return fmt.Sprintf("%sscripts/kconfig/merge_config.sh .config <(sonix-run kconfig --arch %s)", env, arch)
}
