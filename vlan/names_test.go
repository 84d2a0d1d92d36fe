package vlan

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, name := range []string{"a", "lan0", "Z-9_x.y", strings.Repeat("x", MaxNameLen)} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", ".hidden", "-x", "_x", "a/b", "..", "a b", "é", "a\x00", strings.Repeat("x", MaxNameLen+1)} {
		err := CheckName(name)
		if err == nil || !strings.Contains(err.Error(), "vlan name") {
			t.Errorf("CheckName(%q) = %v, want an error naming the vlan name", name, err)
		}
	}
}

func TestMAC(t *testing.T) {
	a := MAC("server", "lan0")
	if got := MAC("server", "lan0"); got.String() != a.String() {
		t.Fatalf("MAC is not stable: %s then %s", a, got)
	}
	seen := map[string]string{}
	for _, vm := range []string{"server", "client", "a", "b", "server2"} {
		for _, lan := range []string{"lan0", "lan1", "x"} {
			m := MAC(vm, lan)
			if len(m) != 6 {
				t.Fatalf("MAC(%q, %q) = %s: not 6 bytes", vm, lan, m)
			}
			if m[0] != 0x02 {
				t.Errorf("MAC(%q, %q) = %s: want first octet 02 (locally administered, unicast)", vm, lan, m)
			}
			if prev, dup := seen[m.String()]; dup {
				t.Errorf("MAC(%q, %q) = %s, same as %s", vm, lan, m, prev)
			}
			seen[m.String()] = vm + "@" + lan
		}
	}
	// The separator keeps ("ab","c") and ("a","bc") apart.
	if MAC("ab", "c").String() == MAC("a", "bc").String() {
		t.Error("MAC does not separate the VM name from the LAN name")
	}
}
