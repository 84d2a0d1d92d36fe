// Package vmm is the backend-neutral description of a virtual machine and
// the interface every hypervisor backend implements. It depends on nothing
// else in sonix-run: backends (qemu, vz) translate a VM into their own terms,
// and the run lifecycle (launcher) drives them through Backend and Machine.
package vmm

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

// ParseAccel reads --accel.
func ParseAccel(s string) (Accel, error) {
	switch a := Accel(s); a {
	case AccelAuto, AccelKVM, AccelTCG:
		return a, nil
	}
	return "", fmt.Errorf("--accel %q: expected auto, kvm or tcg", s)
}

// Cache is how long a virtiofs share's metadata and data may be cached.
type Cache string

const (
	CacheAlways Cache = "always" // immutable trees: the store
	CacheAuto   Cache = "auto"   // trees that change on the host: modules after a rebuild
)

// MaxTagLen is the longest virtio-fs tag: the device's config field is 36 bytes.
const MaxTagLen = 36

// Share is a host directory shared into the guest over virtio-fs.
type Share struct {
	Tag      string // the virtiofs tag the guest mounts; 1 to MaxTagLen bytes
	HostDir  string // absolute
	ReadOnly bool   // enforced on the host, not only by the guest's mount
	Cache    Cache
	Socket   string // vhost-user socket of its virtiofsd (backends with external virtiofsd; set by the launcher)
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

	Kernel string // host path of the kernel image, as the user or boot.json named it
	Initrd string // host path of the initrd, "" for none

	// KernelAsIs makes the backend boot Kernel exactly as given, never an
	// uncompressed copy of it (--kernel-format bzimage): the escape hatch
	// for a kernel that misbehaves when booted through its PVH entry.
	KernelAsIs bool
	// BootKernel is the file the backend boots when it is not Kernel; ""
	// boots Kernel. Resolve sets it: QEMU boots an x86_64 bzImage's vmlinux
	// from the kernel cache through its PVH entry, skipping the kernel's
	// self-decompression. Kernel keeps naming the image, for messages. In
	// DryRun mode Resolve extracts nothing and sets ExtractedKernel or
	// CachedKernel instead: a printed script extracts the kernel first.
	BootKernel string

	// The kernel command line is BootParams, then what the machine needs
	// (added by the backend: console, panic handling), then UserParams; see
	// CommandLine.
	BootParams []string // init=<init>, then the bootspec's kernelParams
	UserParams []string // $SONIX_APPEND and --append, last so that they win

	Shares  []Share
	Network Network
	Disks   []Disk

	// GDBPort, when not 0, opens the hypervisor's gdb stub on localhost;
	// GDBWait holds the CPUs until gdb attaches and continues them.
	GDBPort int
	GDBWait bool
	// Agent gives the guest the virtio console port of sonix-run's guest
	// agent (agent/wire.PortName); Machine.AgentConn connects to it.
	Agent bool
	// QEMUArgs are raw arguments added to QEMU's command line, last
	// (Features.RawQEMUArgs).
	QEMUArgs []string
	// Rosetta shares Apple's Rosetta for Linux (Features.Rosetta).
	Rosetta bool
	// DumpPath, when set, receives an ELF memory dump of a guest that
	// panics, before the VM ends (Features.Dump).
	DumpPath string

	RunDir string // private per-run directory for sockets (mode 0700)
}

// As VM.BootKernel after a DryRun Resolve, these stand for the kernel that
// `sonix-run extract-kernel [--cached-only] VM.Kernel` prints: a dry run
// prints that step and uses its output where the command line has the word.
const (
	ExtractedKernel = "@SONIX_EXTRACTED_KERNEL@" // extracted into the kernel cache on a miss
	CachedKernel    = "@SONIX_CACHED_KERNEL@"    // from the kernel cache if there, else the image
)

// CommandLine joins the kernel command line in the order NixOS boot loaders
// use, with the machine's own parameters between the system's and the user's.
func (vm *VM) CommandLine(machineParams ...string) string {
	var all []string
	all = append(all, vm.BootParams...)
	all = append(all, machineParams...)
	all = append(all, vm.UserParams...)
	return strings.Join(all, " ")
}

// Limits on what a VM may ask for, checked before anything starts; a
// backend may have lower ones of its own (Features).
const (
	MaxCPUs      = 255
	MinMemoryMiB = 64
	MaxMemoryMiB = 16 << 20 // 16 TiB
)

// Validate checks what every backend relies on.
func (vm *VM) Validate() error {
	switch {
	case vm.Kernel == "":
		return fmt.Errorf("no kernel")
	case vm.CPUs < 1 || vm.CPUs > MaxCPUs:
		return fmt.Errorf("--cpus %d: expected 1 to %d", vm.CPUs, MaxCPUs)
	case vm.MemoryMiB < MinMemoryMiB:
		return fmt.Errorf("--memory %dM: expected at least %dM", vm.MemoryMiB, MinMemoryMiB)
	case vm.MemoryMiB > MaxMemoryMiB:
		return fmt.Errorf("--memory %dM: expected at most %dM", vm.MemoryMiB, MaxMemoryMiB)
	case vm.GDBWait && vm.GDBPort == 0:
		return fmt.Errorf("--gdb-wait needs --gdb")
	case vm.GDBPort < 0 || vm.GDBPort > 65535:
		return fmt.Errorf("--gdb=%d: expected a TCP port, 1 to 65535", vm.GDBPort)
	}
	tags := map[string]bool{}
	for _, s := range vm.Shares {
		if err := CheckTag(s.Tag); err != nil {
			return fmt.Errorf("share %s: %w", s.HostDir, err)
		}
		if tags[s.Tag] {
			return fmt.Errorf("two shares use the tag %q", s.Tag)
		}
		tags[s.Tag] = true
	}
	hostPorts := map[string]bool{}
	for _, f := range vm.Network.Forwards {
		key := fmt.Sprintf("%s:%d", f.Proto, f.HostPort)
		if hostPorts[key] {
			return fmt.Errorf("--forward: host port %s is forwarded twice", key)
		}
		hostPorts[key] = true
		if vm.GDBPort != 0 && f.Proto == "tcp" && f.HostPort == vm.GDBPort {
			return fmt.Errorf("--forward tcp:%d: that host port is the gdb stub's (--gdb)", f.HostPort)
		}
	}
	if len(vm.Network.Forwards) > 0 && !vm.Network.NAT() {
		return fmt.Errorf("--forward %s needs --net user or restricted", vm.Network.Forwards[0])
	}
	return nil
}

// CheckTag checks a virtio-fs tag: 1 to MaxTagLen bytes of printable ASCII
// without spaces, commas or colons (which the command lines and --share
// syntax would split on).
func CheckTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen {
		return fmt.Errorf("tag %q: expected 1 to %d bytes", tag, MaxTagLen)
	}
	for _, r := range tag {
		if r <= ' ' || r > '~' || r == ',' || r == ':' {
			return fmt.Errorf("tag %q: expected printable ASCII without spaces, commas or colons", tag)
		}
	}
	return nil
}
