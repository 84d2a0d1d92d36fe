package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// /dev/kvm served by kvm_pvm (no VT-x or AMD-V) is not used by --accel
// auto; with a hardware module beside it, or none, the probe decides.
func TestSoftwareKVM(t *testing.T) {
	for _, tc := range []struct {
		modules []string
		pvm     bool
	}{
		{[]string{"kvm", "kvm_pvm"}, true},
		{[]string{"kvm", "kvm_intel"}, false},
		{[]string{"kvm", "kvm_amd"}, false},
		{[]string{"kvm", "kvm_pvm", "kvm_intel"}, false},
		{nil, false},
	} {
		dir := t.TempDir()
		for _, m := range tc.modules {
			os.Mkdir(filepath.Join(dir, m), 0o755)
		}
		old := moduleDir
		moduleDir = dir
		got := softwareKVM()
		moduleDir = old
		if (got != "") != tc.pvm || tc.pvm && !strings.Contains(got, "kvm_pvm") {
			t.Errorf("modules %v: %q, want software KVM %v", tc.modules, got, tc.pvm)
		}
	}
}

// A guest stopped on a KVM internal error is reported in one line, with
// what to do, not QEMU's register dump.
func TestInternalErrorMessage(t *testing.T) {
	stderr := "KVM internal error. Suberror: 1\nextra data[0]: 0x1\nemulation failure\nRAX=0000000000000000 RBX=ffff\nCode=24 5b 80\n"
	got := internalError("kvm", stderr).Error()
	want := "QEMU stopped the guest: KVM internal error. Suberror: 1 (emulation failure); KVM on this host cannot run this guest: --accel tcg runs it emulated"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := internalError("tcg", "").Error(); got != "QEMU stopped the guest: an internal error" {
		t.Errorf("tcg, no stderr: %q", got)
	}
}
