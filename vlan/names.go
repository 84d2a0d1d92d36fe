package vlan

import (
	"crypto/sha256"
	"errors"
	"net"

	"github.com/sonix-run/sonix-run/vmm"
)

// MaxNameLen bounds a LAN name (vmm.MaxLANName).
const MaxNameLen = vmm.MaxLANName

// CheckName reports whether lan is usable as a LAN name: the rule is
// vmm.VLAN's.
func CheckName(lan string) error {
	if err := (vmm.VLAN{LAN: lan}).Validate(); err != nil {
		return errors.New(err.(*vmm.Problem).Want)
	}
	return nil
}

// MAC is the stable Ethernet address of VM vm's NIC on LAN lan: the same
// pair always gets the same address, so a guest's neighbours (and its IPv6
// link-local address) survive a restart. The first octet is 0x02, a locally
// administered unicast address, which no vendor's NIC and no QEMU default
// (52:54:00:...) uses; the other five octets are a SHA-256 of the pair. Two
// pairs on one LAN colliding is a 1 in 2^40 event per pair, and the switch
// refuses a second port with an address already in use, naming both VMs.
func MAC(vm, lan string) net.HardwareAddr {
	h := sha256.Sum256([]byte("sonix-run vlan MAC\x00" + lan + "\x00" + vm))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}
