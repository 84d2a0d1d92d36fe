package vlan

import (
	"crypto/sha256"
	"fmt"
	"net"
)

// MaxNameLen bounds a LAN name: it becomes a path component of Unix socket
// paths, which the kernel limits to 107 bytes in all.
const MaxNameLen = 32

// CheckName reports whether lan is usable as a LAN name.
func CheckName(lan string) error {
	ok := lan != "" && len(lan) <= MaxNameLen && isAlnum(lan[0])
	for i := 0; ok && i < len(lan); i++ {
		c := lan[i]
		ok = isAlnum(c) || c == '-' || c == '_' || c == '.'
	}
	if !ok {
		return fmt.Errorf("vlan name %q: expected 1 to %d letters, digits, '-', '_' or '.', starting with a letter or digit", lan, MaxNameLen)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
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
