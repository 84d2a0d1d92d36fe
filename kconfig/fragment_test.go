package kconfig

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/<arch>.config from Fragment")

// The options each architecture must have, whatever else the fragment
// grows: what the boot, the agent and the named features need.
var required = map[string][]string{
	x86_64: {
		"64BIT", "ACPI", "PCI", "VIRTIO_PCI", "VIRTIO_MMIO", "FUSE_FS", "VIRTIO_FS", "VIRTIO_CONSOLE",
		"SERIAL_8250", "SERIAL_8250_CONSOLE", "TMPFS", "DEVTMPFS", "DEVTMPFS_MOUNT", "PROC_FS", "SYSFS",
		"BLK_DEV_INITRD", "RD_GZIP", "RD_XZ", "RD_ZSTD", "BINFMT_ELF", "BINFMT_SCRIPT", "UNIX",
		"PVPANIC", "PVPANIC_MMIO", "DEBUG_INFO", "VIRTIO_NET", "PACKET", "INET", "IPV6", "VIRTIO_BLK",
		"HW_RANDOM_VIRTIO", "PVH", "IKCONFIG", "IKCONFIG_PROC", "UNIX98_PTYS", "FUTEX", "EPOLL",
		"POSIX_TIMERS", "CGROUPS", "AUTOFS_FS", "INOTIFY_USER", "SIGNALFD", "TIMERFD", "FHANDLE",
		"TMPFS_POSIX_ACL", "TMPFS_XATTR", "SECCOMP", "DMIID",
	},
	aarch64: {
		"PCI", "PCI_HOST_GENERIC", "VIRTIO_PCI", "VIRTIO_MMIO", "FUSE_FS", "VIRTIO_FS", "VIRTIO_CONSOLE",
		"SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE", "TMPFS", "DEVTMPFS", "DEVTMPFS_MOUNT",
		"PROC_FS", "SYSFS", "BLK_DEV_INITRD", "RD_GZIP", "RD_XZ", "RD_ZSTD", "BINFMT_ELF",
		"BINFMT_SCRIPT", "UNIX", "PVPANIC", "PVPANIC_PCI", "DEBUG_INFO", "VIRTIO_NET", "PACKET", "INET",
		"IPV6", "VIRTIO_BLK", "HW_RANDOM_VIRTIO", "IKCONFIG", "IKCONFIG_PROC", "UNIX98_PTYS", "FUTEX",
		"EPOLL", "POSIX_TIMERS", "CGROUPS", "AUTOFS_FS", "RTC_DRV_PL031",
	},
}

// Options that belong to the other architecture only.
var forbidden = map[string][]string{
	x86_64:  {"PCI_HOST_GENERIC", "SERIAL_AMBA_PL011", "PVPANIC_PCI", "RTC_DRV_PL031", "SUSPEND"},
	aarch64: {"64BIT", "ACPI", "SERIAL_8250", "PVPANIC_MMIO", "PVH", "KVM_GUEST", "DMIID"},
}

func TestFragment(t *testing.T) {
	for _, arch := range Arches {
		t.Run(arch, func(t *testing.T) {
			text, err := Fragment(arch)
			if err != nil {
				t.Fatal(err)
			}
			entries, err := parse([]byte(text))
			if err != nil {
				t.Fatalf("the fragment does not parse as a kconfig fragment: %v", err)
			}
			count := map[string]int{}
			for _, e := range entries {
				count[e.name]++
				if e.value != "y" {
					t.Errorf("line %d: CONFIG_%s=%s, want y (everything is built in)", e.line, e.name, e.value)
				}
			}
			for name, n := range count {
				if n != 1 {
					t.Errorf("CONFIG_%s appears %d times, want once", name, n)
				}
			}
			for _, name := range required[arch] {
				if count[name] != 1 {
					t.Errorf("CONFIG_%s is missing", name)
				}
			}
			for _, name := range forbidden[arch] {
				if count[name] != 0 {
					t.Errorf("CONFIG_%s is there, but not for %s", name, arch)
				}
			}
			// Every option line sits in a group whose comment says why.
			lines := strings.Split(text, "\n")
			for i, l := range lines {
				if !strings.HasPrefix(l, "CONFIG_") {
					continue
				}
				j := i - 1
				for j >= 0 && strings.HasPrefix(lines[j], "CONFIG_") {
					j--
				}
				if j < 0 || !strings.HasPrefix(lines[j], "# ") {
					t.Errorf("line %d (%s) has no comment above its group", i+1, l)
				}
			}
			golden := filepath.Join("testdata", arch+".config")
			if *update {
				if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./kconfig -run TestFragment -update)", err)
			}
			if string(want) != text {
				t.Errorf("%s differs from Fragment(%q): scripts/build-test-kernel builds from the file; run go test ./kconfig -run TestFragment -update and review the diff", golden, arch)
			}
		})
	}
}

func TestFragmentUnknownArch(t *testing.T) {
	for _, arch := range []string{"", "amd64", "arm64", "riscv64", "x86_64 "} {
		_, err := Fragment(arch)
		if err == nil || !strings.Contains(err.Error(), "x86_64 or aarch64") {
			t.Errorf("Fragment(%q): error %v, want one naming x86_64 or aarch64", arch, err)
		}
		if _, err := Check(arch, &Kernel{Config: Config{}}); err == nil {
			t.Errorf("Check(%q): no error", arch)
		}
	}
}

// Every checked tristate driver has a module name, so that a modules tree
// can tell built-in from modular; the table's names are canonical.
func TestOptionTable(t *testing.T) {
	for _, g := range groups {
		if len(g.why) == 0 {
			t.Errorf("a group starting with %s has no comment", g.options[0].name)
		}
		for _, o := range g.options {
			if !validName(o.name) || strings.HasPrefix(o.name, "CONFIG_") {
				t.Errorf("bad option name %q", o.name)
			}
			for _, m := range []string{o.module, o.builtinName} {
				if strings.Contains(m, "-") {
					t.Errorf("CONFIG_%s: module name %q must use _ (canonical)", o.name, m)
				}
			}
			for _, a := range o.arches {
				if checkArch(a) != nil {
					t.Errorf("CONFIG_%s: unknown arch %q", o.name, a)
				}
			}
		}
	}
}
