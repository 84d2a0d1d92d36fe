package vz

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/sonix-run/sonix-run/internal/diskimage"
	"github.com/sonix-run/sonix-run/vmm"
)

// MachineParams are the kernel parameters the vz machine adds between the
// system's and the user's (see vmm.VM.CommandLine):
//
//   - console=hvc0: the console is a virtio console, which Linux names hvc0.
//     The kernel opens /dev/console for the first process before that
//     process runs, so with virtio_console (or virtio_pci) as a module the
//     first process starts with no stdin, stdout or stderr and everything it
//     and its children print is lost, unless it reopens /dev/console after
//     loading the drivers (systemd does so by itself; a shell stage 1 must:
//     docs/macos.md). Kernel messages are not lost: the log is replayed when
//     hvc0 registers. An arm64 kernel with CONFIG_HVC_DCC=y takes hvc0 for
//     itself and the virtio console becomes hvc1.
//   - panic=-1: a panicking kernel resets the machine at once instead of
//     hanging, which ends the run; the framework reports every guest-made
//     end as "stopped", and the console tells a panic apart (see ending.go).
var MachineParams = []string{"console=hvc0", "panic=-1"}

// ConsoleDevice is the guest's name for the virtio console.
const ConsoleDevice = "hvc0"

// RosettaTag is the virtio-fs tag of the Rosetta share: the default of
// NixOS's virtualisation.rosetta.mountTag, which mounts it on /run/rosetta
// and registers it with binfmt_misc.
const RosettaTag = "rosetta"

// MaxBlockIDLen is the longest block device identifier the framework takes:
// VZVirtioBlockDeviceConfiguration.blockDeviceIdentifier "must be at most 20
// bytes in length and ASCII-encodable" (Apple's documentation, quoted in vz
// v3.7.1's SetBlockDeviceIdentifier), the same 20 bytes as a virtio-blk
// serial (VIRTIO_BLK_ID_BYTES).
const MaxBlockIDLen = 20

// MaxTagLen is the longest virtio-fs tag the framework takes ("fewer than
// 36 bytes when encoded in UTF-8"): one less than vmm.MaxTagLen, which a
// VM for this backend must also keep to.
const MaxTagLen = 35

// Options are what a plan needs beyond the launcher's VM.
type Options struct {
	// Rosetta shares Rosetta for Linux under RosettaTag, so that an aarch64
	// guest can run x86_64 binaries. Apple silicon only.
	Rosetta bool
	// HostArch is the host's architecture; "" means this machine's. The
	// framework runs guests of the host's architecture only.
	HostArch vmm.Arch
	// MAC overrides the network card's address; nil derives a stable one
	// from the system (see StableMAC).
	MAC net.HardwareAddr
	// Limits are the host's bounds on CPUs and memory; zero fields are not
	// checked. The darwin adapter fills them from the framework.
	Limits Limits
}

// Limits are the CPU and memory bounds the framework accepts on this host.
type Limits struct {
	MinCPUs, MaxCPUs     uint
	MinMemory, MaxMemory uint64 // bytes
}

// Share is one virtio-fs device exposing a host directory.
type Share struct {
	Tag      string
	HostDir  string
	ReadOnly bool
}

// Disk is one virtio block device on a raw image file.
type Disk struct {
	Path     string
	ReadOnly bool
	// Identifier is the device's identifier, which the guest reads as the
	// virtio-blk serial: /dev/disk/by-id/virtio-<Identifier>.
	Identifier string
	// Create, when not 0, is the size of the image Prepare creates
	// (sparse) when Path does not exist yet (--state).
	Create int64
}

// Plan is everything the darwin adapter applies to a
// Virtualization.framework configuration. It is plain data, so tests on any
// OS can inspect it.
type Plan struct {
	Arch vmm.Arch // the guest's (and host's) architecture

	// Kernel is the file the Linux boot loader gets: KernelSource itself,
	// or for a compressed arm64 kernel its decompressed copy in the run
	// directory, written by Prepare.
	Kernel       string
	KernelSource string
	KernelFormat KernelFormat
	Initrd       string // "" for none
	CommandLine  string

	CPUs        uint
	MemoryBytes uint64 // a whole number of MiB, as the framework requires

	// Shares are the launcher's shares, one virtio-fs device each. The
	// framework has no cache setting; vmm.Share.Cache is not used.
	Shares []Share
	// RosettaTag is the tag of the Rosetta share, "" for none.
	RosettaTag string
	// Disks are the launcher's disks (--disk, then --state), one virtio
	// block device each, in order.
	Disks []Disk

	// Console is the guest device of the virtio console that carries the
	// launcher's console pipes.
	Console string
	// AgentPort is the name of the virtio console port that carries the
	// guest agent's protocol (vmm.AgentPortName), "" for none. It is the one
	// port of a console device of its own, not a console (no hvc), so the
	// guest sees it as /dev/vportNp0 with that name in
	// /sys/class/virtio-ports/vportNp0/name.
	AgentPort string
	// Network is the attachment of the one network card: NetworkNAT, the
	// framework's shared NAT (DHCP and DNS from macOS, no entitlement), or
	// "" for no card at all (--net none).
	Network string
	MAC     net.HardwareAddr // nil without a network card
	// Entropy adds a virtio entropy device (the guest's /dev/hwrng).
	Entropy bool
}

// NetworkNAT is Plan.Network for the framework's NAT.
const NetworkNAT = "nat"

// NewPlan translates vm into a Plan. It reads the head of the kernel (and,
// for a compressed one, decompresses enough to check it) but writes nothing;
// Prepare writes what the plan needs in the run directory.
func NewPlan(vm *vmm.VM, opts Options) (*Plan, error) {
	host := opts.HostArch
	if host == "" {
		var err error
		if host, err = archOfGOARCH(runtime.GOARCH); err != nil {
			return nil, err
		}
	}
	if vm.Arch != host {
		return nil, fmt.Errorf("the system is %s-linux, but Virtualization.framework runs only guests of the host's architecture (%s-linux here): build the system for %s-linux (docs/macos.md: remote builders)", vm.Arch, host, host)
	}
	if vm.Accel != "" && vm.Accel != vmm.AccelAuto {
		return nil, fmt.Errorf("--accel %s is for the qemu backend; vz always runs the guest on the hardware", vm.Accel)
	}
	if vm.Kernel == "" {
		return nil, errors.New("no kernel")
	}
	p := &Plan{
		Arch:         vm.Arch,
		Kernel:       vm.Kernel,
		KernelSource: vm.Kernel,
		Initrd:       vm.Initrd,
		CommandLine:  vm.CommandLine(MachineParams...),
		Console:      ConsoleDevice,
		Entropy:      true,
	}
	if err := refuseUnsupported(vm); err != nil {
		return nil, err
	}
	if vm.Agent {
		p.AgentPort = vmm.AgentPortName
	}

	format, err := inspectKernel(vm.Kernel, vm.Arch)
	if err != nil {
		return nil, err
	}
	p.KernelFormat = format
	if format.Compressed() {
		if vm.RunDir == "" {
			return nil, fmt.Errorf("%s is compressed (%s) and has to be decompressed, but there is no run directory", vm.Kernel, format)
		}
		p.Kernel = filepath.Join(vm.RunDir, "Image")
	}

	if p.CPUs, err = planCPUs(vm.CPUs, opts.Limits); err != nil {
		return nil, err
	}
	if p.MemoryBytes, err = planMemory(vm.MemoryMiB, opts.Limits); err != nil {
		return nil, err
	}

	tags := map[string]bool{}
	for _, s := range vm.Shares {
		if err := checkTag(s.Tag); err != nil {
			return nil, fmt.Errorf("share %s: %w", s.HostDir, err)
		}
		if tags[s.Tag] {
			return nil, fmt.Errorf("two shares use the tag %q", s.Tag)
		}
		tags[s.Tag] = true
		if s.HostDir == "" {
			return nil, fmt.Errorf("share %q: no host directory", s.Tag)
		}
		p.Shares = append(p.Shares, Share{Tag: s.Tag, HostDir: s.HostDir, ReadOnly: s.ReadOnly})
	}

	if p.Disks, err = planDisks(vm.Disks); err != nil {
		return nil, err
	}

	if opts.Rosetta {
		if host != vmm.AArch64 {
			return nil, fmt.Errorf("--rosetta needs an Apple silicon Mac (this host is %s)", host)
		}
		if tags[RosettaTag] {
			return nil, fmt.Errorf("--rosetta: a share already uses the tag %q", RosettaTag)
		}
		p.RosettaTag = RosettaTag
	}

	switch vm.Network.Mode {
	case vmm.NetNone:
		return p, nil // no card, so no address either
	case vmm.NetUser, "":
		p.Network = NetworkNAT
	default:
		return nil, fmt.Errorf("--net %q: the vz backend offers user (the framework's NAT) or none", vm.Network.Mode)
	}
	if opts.MAC != nil {
		if err := checkMAC(opts.MAC); err != nil {
			return nil, err
		}
		p.MAC = append(net.HardwareAddr(nil), opts.MAC...)
	} else {
		p.MAC = StableMAC(macKey(vm))
	}
	return p, nil
}

// refuseUnsupported fails for what vm asks that a Plan cannot express: the
// launcher checks Features first, but a plan must never drop a request
// silently.
func refuseUnsupported(vm *vmm.VM) error {
	switch {
	case len(vm.Network.Forwards) > 0:
		return fmt.Errorf("--forward %s: the vz backend cannot forward ports (the framework's NAT has no port forwarding); use the qemu backend, or reach the guest at the address macOS's DHCP gave it", vm.Network.Forwards[0])
	case vm.GDBPort != 0:
		return errors.New("--gdb needs the qemu backend; Virtualization.framework has no gdb stub")
	case len(vm.QEMUArgs) > 0:
		return errors.New("--qemu-arg needs the qemu backend")
	}
	return nil
}

// Prepare writes what the plan needs before the VM starts: the decompressed
// kernel. It is a no-op for an uncompressed one.
func (p *Plan) Prepare() error {
	for _, d := range p.Disks {
		if d.Create == 0 {
			continue
		}
		if _, err := diskimage.CreateRaw(d.Path, d.Create); err != nil {
			return fmt.Errorf("creating the image %s: %w", d.Path, err)
		}
	}
	if p.Kernel == p.KernelSource {
		return nil
	}
	return decompressKernel(p.KernelSource, p.KernelFormat, p.Kernel)
}

func archOfGOARCH(goarch string) (vmm.Arch, error) {
	switch goarch {
	case "arm64":
		return vmm.AArch64, nil
	case "amd64":
		return vmm.X86_64, nil
	}
	return "", fmt.Errorf("Virtualization.framework does not run on %s hosts", goarch)
}

func planCPUs(n int, l Limits) (uint, error) {
	if n < 1 {
		return 0, fmt.Errorf("--cpus must be at least 1, got %d", n)
	}
	c := uint(n)
	if l.MinCPUs > 0 && c < l.MinCPUs {
		return 0, fmt.Errorf("--cpus %d: Virtualization.framework needs at least %d here", n, l.MinCPUs)
	}
	if l.MaxCPUs > 0 && c > l.MaxCPUs {
		return 0, fmt.Errorf("--cpus %d: Virtualization.framework allows at most %d here", n, l.MaxCPUs)
	}
	return c, nil
}

const mib = 1 << 20

// planMemory turns MiB into bytes, which are then a multiple of 1 MiB as the
// framework requires, and checks them against the host's bounds. The bounds
// are stated in whole MiB: the minimum rounded up, the maximum rounded down,
// as those are the sizes --memory can give.
func planMemory(mibs int, l Limits) (uint64, error) {
	if mibs < 1 {
		return 0, fmt.Errorf("--memory must be positive, got %dM", mibs)
	}
	b := uint64(mibs) * mib
	if l.MinMemory > 0 {
		if lo := (l.MinMemory + mib - 1) / mib; uint64(mibs) < lo {
			return 0, fmt.Errorf("--memory %dM: Virtualization.framework needs at least %dM here", mibs, lo)
		}
	}
	if l.MaxMemory > 0 {
		if hi := l.MaxMemory / mib; uint64(mibs) > hi {
			return 0, fmt.Errorf("--memory %dM: Virtualization.framework allows at most %dM here", mibs, hi)
		}
	}
	return b, nil
}

// planDisks gives each disk its identifier, vmm.Disk.Serial or "diskN" (N
// its index, as the qemu backend numbers them), and refuses what the
// framework cannot attach.
func planDisks(disks []vmm.Disk) ([]Disk, error) {
	var out []Disk
	ids := map[string]string{}
	for i, d := range disks {
		flag := "--disk"
		if d.Serial == vmm.StateSerial {
			flag = "--state"
		}
		if d.Path == "" {
			return nil, fmt.Errorf("%s: no image file", flag)
		}
		switch d.Format {
		case "", "raw":
		case "qcow2":
			return nil, fmt.Errorf("%s %s: format qcow2: Virtualization.framework takes raw images only; convert with qemu-img convert -O raw", flag, d.Path)
		default:
			return nil, fmt.Errorf("%s %s: format %q: Virtualization.framework takes raw images only", flag, d.Path, d.Format)
		}
		id := d.Serial
		if id == "" {
			id = fmt.Sprintf("disk%d", i)
		}
		if err := checkBlockID(id); err != nil {
			return nil, fmt.Errorf("%s %s: %w", flag, d.Path, err)
		}
		if other, ok := ids[id]; ok {
			return nil, fmt.Errorf("%s %s: %s already uses the identifier %q", flag, d.Path, other, id)
		}
		ids[id] = d.Path
		out = append(out, Disk{Path: d.Path, ReadOnly: d.ReadOnly, Identifier: id, Create: d.Create})
	}
	return out, nil
}

// checkBlockID applies the framework's rule for block device identifiers
// (at most MaxBlockIDLen bytes of ASCII), and refuses control characters,
// which the C string the identifier travels in (NUL) or the guest's udev
// (by-id names) would not keep.
func checkBlockID(id string) error {
	if len(id) > MaxBlockIDLen {
		return fmt.Errorf("identifier %q is %d bytes; Virtualization.framework takes at most %d", id, len(id), MaxBlockIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("identifier %q: byte %#x: want printable ASCII (Virtualization.framework takes ASCII only)", id, c)
		}
	}
	return nil
}

// checkTag applies the framework's rule for virtio-fs tags: not empty and
// fewer than 36 bytes of UTF-8.
func checkTag(tag string) error {
	switch {
	case tag == "":
		return errors.New("empty virtio-fs tag")
	case len(tag) > MaxTagLen:
		return fmt.Errorf("virtio-fs tag %q is %d bytes; Virtualization.framework takes at most %d", tag, len(tag), MaxTagLen)
	case strings.ContainsRune(tag, 0):
		return fmt.Errorf("virtio-fs tag %q contains a NUL byte", tag)
	}
	return nil
}

func checkMAC(mac net.HardwareAddr) error {
	switch {
	case len(mac) != 6:
		return fmt.Errorf("MAC address %s: want 6 bytes", mac)
	case mac[0]&1 != 0:
		return fmt.Errorf("MAC address %s is a multicast address", mac)
	}
	return nil
}

// macKey is what the MAC address derives from: the system's toplevel (the
// directory of its init= program) when the command line names one, else the
// kernel. The same system gets the same address, so the macOS DHCP server
// (which keeps leases by address in /var/db/dhcpd_leases) hands it the same
// IP address run after run instead of a new lease each time.
func macKey(vm *vmm.VM) string {
	for _, p := range vm.BootParams {
		if init, ok := strings.CutPrefix(p, "init="); ok && init != "" {
			return "toplevel:" + filepath.Dir(init)
		}
	}
	return "kernel:" + vm.Kernel
}

// StableMAC derives a locally administered unicast MAC address from key.
func StableMAC(key string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("sonix-run vz mac\x00" + key))
	mac := net.HardwareAddr(sum[:6:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}
