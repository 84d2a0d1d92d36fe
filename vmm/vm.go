// Package vmm is the backend-neutral description of a virtual machine and
// the interface every hypervisor backend implements. It depends on nothing
// else in sonix-run: backends (qemu, vz) translate a VM into their own terms,
// and the run lifecycle (launcher) drives them through Backend and Machine.
package vmm

import (
	"errors"
	"fmt"
	"strconv"
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
	// Firmware is the firmware the backend boots with instead of its
	// default; "" keeps the default. Resolve sets it: QEMU boots a kernel
	// through its PVH entry under TCG with qboot, which hands over to
	// the kernel at once where SeaBIOS spends about 0.1 s.
	Firmware string

	// The kernel command line is BootParams, then what the machine needs
	// (added by the backend: console, panic handling), then UserParams; see
	// CommandLine.
	BootParams []string // init=<init>, then the bootspec's kernelParams
	UserParams []string // $SONIX_APPEND and --append, last so that they win

	Network Network
	Devices // shares, disks

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

// Validate checks what every backend relies on, and reports every
// problem (errors.Join of *Problem, each naming its VM field).
func (vm *VM) Validate() error {
	var errs []error
	add := func(field string, err error) {
		for _, p := range Problems(err) {
			errs = append(errs, p.At(field, ""))
		}
	}
	if vm.Kernel == "" {
		add("Kernel", problem("", "expected a kernel image"))
	}
	if vm.CPUs < 1 || vm.CPUs > MaxCPUs {
		add("CPUs", problem(strconv.Itoa(vm.CPUs), "expected 1 to %d", MaxCPUs))
	}
	if vm.MemoryMiB < MinMemoryMiB {
		add("MemoryMiB", problem(fmt.Sprintf("%dM", vm.MemoryMiB), "expected at least %dM", MinMemoryMiB))
	} else if vm.MemoryMiB > MaxMemoryMiB {
		add("MemoryMiB", problem(fmt.Sprintf("%dM", vm.MemoryMiB), "expected at most %dM", MaxMemoryMiB))
	}
	if vm.GDBPort < 0 || vm.GDBPort > 65535 {
		add("GDBPort", problem(strconv.Itoa(vm.GDBPort), "expected a TCP port, 1 to 65535"))
	}
	if vm.GDBWait && vm.GDBPort == 0 {
		add("GDBWait", problem("", "needs a gdb stub (--gdb)"))
	}
	for _, p := range Problems(vm.Devices.Validate()) {
		errs = append(errs, p)
	}
	add("Network", vm.Network.Validate(vm.GDBPort))
	return errors.Join(errs...)
}

// Validate checks a network: its mode, its forwards (no host port twice,
// none on the gdb stub's port gdbPort), its LANs (none twice).
func (n Network) Validate(gdbPort int) error {
	var errs []error
	add := func(field string, err error) {
		for _, p := range Problems(err) {
			errs = append(errs, p.At(field, ""))
		}
	}
	if _, err := ParseNet(n.Mode); err != nil {
		add("Mode", problem(strconv.Quote(n.Mode), "expected user, restricted or none"))
	}
	hostPorts := map[string]bool{}
	for i, f := range n.Forwards {
		field := fmt.Sprintf("Forwards[%d]", i)
		add(field, f.Validate())
		key := fmt.Sprintf("%s:%d", f.Proto, f.HostPort)
		if hostPorts[key] {
			add(field, problem(f.String(), "host port %s is forwarded twice", key))
		}
		hostPorts[key] = true
		if gdbPort != 0 && f.Proto == "tcp" && f.HostPort == gdbPort {
			add(field, problem(f.String(), "that host port is the gdb stub's (--gdb)"))
		}
		if !n.NAT() {
			add(field, problem(f.String(), "needs --net user or restricted"))
		}
	}
	lans := map[string]bool{}
	for i, v := range n.VLANs {
		field := fmt.Sprintf("VLANs[%d]", i)
		add(field, v.Validate())
		if lans[v.LAN] {
			add(field, problem(v.String(), "the LAN %s is given twice", v.LAN))
		}
		lans[v.LAN] = true
	}
	return errors.Join(errs...)
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
