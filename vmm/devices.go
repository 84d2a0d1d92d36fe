package vmm

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Devices are a VM's devices beyond its CPUs, memory and network: what a
// user adds with a device flag. VM and config.Config both embed them, so
// that a new kind of device is a field here (its type, parser and
// Validate in this file), a flag in config's table, and its translation
// by each backend (qemu's argv, vz's plan, which refuses what it cannot
// do): nothing in between copies it field by field.
type Devices struct {
	Shares []Share
	Disks  []Disk
}

// Validate checks every device, and reports every problem, each naming its
// field (Shares[1], Disks[0]).
func (d Devices) Validate() error {
	var errs []error
	add := func(field string, err error) {
		for _, p := range Problems(err) {
			errs = append(errs, p.At(field, ""))
		}
	}
	tags := map[string]bool{}
	for n, s := range d.Shares {
		field := fmt.Sprintf("Shares[%d]", n)
		add(field, s.Validate())
		if tags[s.Tag] {
			add(field, problem(s.HostDir, "the tag %q is another share's too", s.Tag))
		}
		tags[s.Tag] = true
	}
	for n, disk := range d.Disks {
		add(fmt.Sprintf("Disks[%d]", n), disk.Validate())
	}
	return errors.Join(errs...)
}

// Network is the guest's network: a NAT NIC (NetUser) first, then one NIC
// per virtual LAN, in order (with NetNone the first LAN's NIC is eth0).
type Network struct {
	Mode     string // NetUser, NetRestricted or NetNone
	Forwards []Forward
	VLANs    []VLANPort
}

// VLANPort is the VM's NIC on a virtual LAN shared with other VMs of the
// same user (package vlan runs the switch; the launcher joins it).
type VLANPort struct {
	VLAN
	Socket string // the switch's stream socket for this VM (set at boot)
	MAC    string // stable per VM and LAN, e.g. 02:xx:xx:xx:xx:xx
}

const (
	NetUser = "user" // NAT through the hypervisor, no privileges needed
	// NetRestricted is NetUser with the guest cut off from the host and
	// the network: only forwarded ports reach it. For guests that must not
	// reach services on the host's loopback (which NAT maps to 10.0.2.2)
	// or the outside.
	NetRestricted = "restricted"
	NetNone       = "none"
)

// ParseNet reads --net.
func ParseNet(s string) (string, error) {
	switch s {
	case NetUser, NetRestricted, NetNone:
		return s, nil
	}
	return "", fmt.Errorf("--net %q: expected user, restricted or none", s)
}

// NAT says whether the network has the hypervisor's NAT NIC (which takes
// forwards).
func (n Network) NAT() bool { return n.Mode == NetUser || n.Mode == NetRestricted }

// Forward forwards a port on the host's loopback to the guest.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostPort  int
	GuestPort int
}

func (f Forward) String() string { return fmt.Sprintf("%s:%d:%d", f.Proto, f.HostPort, f.GuestPort) }

// ParseForward reads PROTO:HOSTPORT:GUESTPORT (--forward), checked by
// Forward.Validate.
func ParseForward(s string) (Forward, error) {
	parts := strings.Split(s, ":")
	bad := &Problem{Flag: "--forward", Value: strconv.Quote(s), Want: "expected tcp:HOSTPORT:GUESTPORT or udp:HOSTPORT:GUESTPORT, ports 1 to 65535"}
	if len(parts) != 3 {
		return Forward{}, bad
	}
	var ports [2]int
	for i, p := range parts[1:] {
		n, err := strconv.Atoi(p)
		if err != nil {
			return Forward{}, bad
		}
		ports[i] = n
	}
	f := Forward{Proto: parts[0], HostPort: ports[0], GuestPort: ports[1]}
	if f.Validate() != nil {
		return Forward{}, bad
	}
	return f, nil
}

// Disk is a host image file attached as a virtio block device.
type Disk struct {
	Path     string
	Format   string // "raw" or "qcow2"
	ReadOnly bool
	Serial   string // the guest sees /dev/disk/by-id/virtio-SERIAL; "" lets the backend number them
	// Create, when not 0, is the size in bytes of the image the backend
	// creates (sparse) when Path does not exist yet (--state).
	Create int64
}

// String is d as --disk takes it (ParseDisk).
func (d Disk) String() string {
	s := d.Path
	if d.Format != "" {
		s += ",format=" + d.Format
	}
	if d.ReadOnly {
		s += ",ro"
	}
	return s
}

// StateSerial is the serial of the disk that keeps a guest's state
// (sonix-run --state): the guest finds it as
// /dev/disk/by-id/virtio-sonix-state, and messages name --state for it.
const StateSerial = "sonix-state"

// ParseDisk reads FILE[,format=raw|qcow2][,ro] (--disk). Without a format, a
// .qcow2 file is qcow2 and anything else raw (QEMU's own guess is unsafe: a
// raw image can look like another format). The file is checked later.
func ParseDisk(s string) (Disk, error) {
	parts := strings.Split(s, ",")
	d := Disk{Path: parts[0]}
	for _, opt := range parts[1:] {
		switch {
		case opt == "ro":
			d.ReadOnly = true
		case opt == "format=raw" || opt == "format=qcow2":
			d.Format = strings.TrimPrefix(opt, "format=")
		default:
			return Disk{}, fmt.Errorf("--disk %q: unknown option %q (expected format=raw, format=qcow2 or ro; a file name cannot hold a comma)", s, opt)
		}
	}
	if d.Format == "" {
		d.Format = "raw"
		if strings.HasSuffix(d.Path, ".qcow2") {
			d.Format = "qcow2"
		}
	}
	if err := d.Validate(); err != nil {
		return Disk{}, fmt.Errorf("--disk %q: %w", s, err)
	}
	return d, nil
}

// String is s as --share takes it (ParseShare).
func (s Share) String() string {
	out := s.HostDir + ":" + s.Tag
	if s.ReadOnly {
		out += ":ro"
	}
	return out
}

// ParseShare reads HOSTDIR:TAG[:ro] (--share). The directory is checked later.
func ParseShare(s string) (Share, error) {
	i := strings.LastIndex(s, ":")
	ro := false
	if i >= 0 && s[i+1:] == "ro" {
		ro, s = true, s[:i]
		i = strings.LastIndex(s, ":")
	}
	if i <= 0 || i == len(s)-1 {
		return Share{}, fmt.Errorf("--share %q: expected HOSTDIR:TAG or HOSTDIR:TAG:ro", s)
	}
	dir, tag := s[:i], s[i+1:]
	if err := CheckTag(tag); err != nil {
		return Share{}, fmt.Errorf("--share %q: %w", s, err)
	}
	sh := Share{Tag: tag, HostDir: dir, ReadOnly: ro, Cache: CacheAuto}
	if err := sh.Validate(); err != nil {
		return Share{}, fmt.Errorf("--share %q: %w", s, err)
	}
	return sh, nil
}

// ParseSize reads a size such as 512M, 2G, 1536 (MiB by default), 2GiB or
// 100K, and returns bytes. flag names it in errors.
func ParseSize(flag, s string) (int64, error) {
	num, unit := strings.TrimSpace(s), ""
	for len(num) > 0 && (num[len(num)-1] < '0' || num[len(num)-1] > '9') {
		num, unit = num[:len(num)-1], num[len(num)-1:]+unit
	}
	mult := map[string]int64{
		"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
		"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}[strings.ToLower(unit)]
	v, err := strconv.ParseUint(num, 10, 63)
	if mult == 0 || err != nil || v == 0 || v > uint64(math.MaxInt64/mult) {
		return 0, fmt.Errorf("%s %q: expected a positive size with an optional unit, such as 512M or 2G", flag, s)
	}
	return int64(v) * mult, nil
}

// ParseMemory reads --memory and returns MiB, within MinMemoryMiB..MaxMemoryMiB.
func ParseMemory(s string) (int, error) {
	b, err := ParseSize("--memory", s)
	if err != nil {
		return 0, err
	}
	if b%(1<<20) != 0 {
		return 0, fmt.Errorf("--memory %q: expected whole MiB", s)
	}
	mib := b >> 20
	if mib < MinMemoryMiB || mib > MaxMemoryMiB {
		return 0, fmt.Errorf("--memory %q: expected %dM to %dT", s, MinMemoryMiB, MaxMemoryMiB>>20)
	}
	return int(mib), nil
}
