package launcher

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Network is the guest's network.
type Network struct {
	Mode     string // NetUser or NetNone
	Forwards []Forward
}

const (
	NetUser = "user" // NAT through the hypervisor, no privileges needed
	NetNone = "none"
)

// Forward forwards a port on the host's loopback to the guest.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostPort  int
	GuestPort int
}

// Disk is a host image file attached as a virtio block device.
type Disk struct {
	Path     string
	Format   string // "raw" or "qcow2"
	ReadOnly bool
}

// ParseForward reads --forward PROTO:HOSTPORT:GUESTPORT.
func ParseForward(s string) (Forward, error) {
	parts := strings.Split(s, ":")
	bad := fmt.Errorf("--forward %q: expected tcp:HOSTPORT:GUESTPORT or udp:HOSTPORT:GUESTPORT", s)
	if len(parts) != 3 || (parts[0] != "tcp" && parts[0] != "udp") {
		return Forward{}, bad
	}
	var ports [2]int
	for i, p := range parts[1:] {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Forward{}, bad
		}
		ports[i] = n
	}
	return Forward{Proto: parts[0], HostPort: ports[0], GuestPort: ports[1]}, nil
}

// ParseDisk reads --disk FILE[,format=raw|qcow2][,ro]. Without a format, a
// .qcow2 file is qcow2 and anything else raw (QEMU's own guess is unsafe:
// a raw image can look like another format).
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
			return Disk{}, fmt.Errorf("--disk %q: unknown option %q (expected format=raw, format=qcow2 or ro)", s, opt)
		}
	}
	if d.Path == "" {
		return Disk{}, fmt.Errorf("--disk %q: no file", s)
	}
	if d.Format == "" {
		d.Format = "raw"
		if strings.HasSuffix(d.Path, ".qcow2") {
			d.Format = "qcow2"
		}
	}
	st, err := os.Stat(d.Path)
	if err != nil {
		return Disk{}, fmt.Errorf("--disk %s: %w", d.Path, err)
	}
	if !st.Mode().IsRegular() {
		return Disk{}, fmt.Errorf("--disk %s: not a regular file (block devices are not supported)", d.Path)
	}
	if d.Path, err = filepath.Abs(d.Path); err != nil {
		return Disk{}, err
	}
	return d, nil
}

// ParseShare reads --share HOSTDIR:TAG[:ro].
func ParseShare(s string) (Share, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] != "ro") {
		return Share{}, fmt.Errorf("--share %q: expected HOSTDIR:TAG or HOSTDIR:TAG:ro", s)
	}
	if err := checkDir("--share", parts[0]); err != nil {
		return Share{}, err
	}
	dir, err := filepath.Abs(parts[0])
	if err != nil {
		return Share{}, err
	}
	return Share{Tag: parts[1], HostDir: dir, ReadOnly: len(parts) == 3, Cache: CacheAuto}, nil
}
