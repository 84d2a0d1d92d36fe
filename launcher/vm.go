package launcher

import (
	"fmt"
	"strings"
)

// Arch is a guest CPU architecture, named as in Nix system strings.
type Arch string

const (
	X86_64  Arch = "x86_64"
	AArch64 Arch = "aarch64"
)

// ArchOfSystem returns the architecture of a Nix system string such as "x86_64-linux".
func ArchOfSystem(system string) (Arch, error) {
	switch system {
	case "x86_64-linux":
		return X86_64, nil
	case "aarch64-linux":
		return AArch64, nil
	}
	return "", fmt.Errorf("unsupported system %q", system)
}

// Accel is how guest code runs: "kvm", "tcg", or "auto" before it is resolved.
type Accel string

const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// Cache is how long a virtiofs share's metadata and data may be cached.
type Cache string

const (
	CacheAlways Cache = "always" // immutable trees: the store
	CacheAuto   Cache = "auto"   // trees that change on the host: modules after a rebuild
)

// Share is a host directory shared into the guest over virtio-fs.
type Share struct {
	Tag      string // the virtiofs tag the guest mounts; at most 36 bytes
	HostDir  string
	ReadOnly bool
	Cache    Cache
	Socket   string // vhost-user socket of its virtiofsd (QEMU only; set by the launcher)
}

// VM is the backend-neutral description of one virtual machine. Backends
// translate it: qemu into a command line, vz into a Virtualization.framework
// configuration.
type VM struct {
	Name      string
	Arch      Arch
	Accel     Accel
	CPUs      int
	MemoryMiB int

	Kernel string // host path of the kernel image
	Initrd string // host path of the initrd, "" for none

	// The kernel command line is BootParams, then what the machine needs
	// (added by the backend: console, panic handling), then UserParams; see
	// CommandLine.
	BootParams []string // init=<init>, then the bootspec's kernelParams
	UserParams []string // --append, last so that they win

	Shares  []Share
	Network Network
	Disks   []Disk

	// GDBPort, when not 0, opens the hypervisor's gdb stub on localhost;
	// GDBWait holds the CPUs until gdb attaches and continues them.
	GDBPort int
	GDBWait bool
	// Ports are named virtio console ports for the guest agent.
	Ports []string
	// QEMUArgs are raw arguments added to QEMU's command line, last.
	QEMUArgs []string

	// Rosetta shares Apple's Rosetta for Linux (vz on Apple silicon only).
	Rosetta bool

	RunDir string // private per-run directory for sockets (mode 0700)
}

// CommandLine joins the kernel command line in the order NixOS boot loaders
// use, with the machine's own parameters between the system's and the user's.
func (vm *VM) CommandLine(machineParams ...string) string {
	var all []string
	all = append(all, vm.BootParams...)
	all = append(all, machineParams...)
	all = append(all, vm.UserParams...)
	return strings.Join(all, " ")
}

// Validate checks what every backend relies on.
func (vm *VM) Validate() error {
	switch {
	case vm.Kernel == "":
		return fmt.Errorf("no kernel")
	case vm.CPUs < 1:
		return fmt.Errorf("--cpus must be at least 1, got %d", vm.CPUs)
	case vm.MemoryMiB < 64:
		return fmt.Errorf("--memory must be at least 64M, got %dM", vm.MemoryMiB)
	}
	tags := map[string]bool{}
	for _, s := range vm.Shares {
		if s.Tag == "" || len(s.Tag) > 36 {
			return fmt.Errorf("share %s: tag %q must be 1 to 36 bytes", s.HostDir, s.Tag)
		}
		if tags[s.Tag] {
			return fmt.Errorf("two shares use the tag %q", s.Tag)
		}
		tags[s.Tag] = true
	}
	return nil
}
