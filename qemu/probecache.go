package qemu

import (
	"fmt"
	"os"
	"strings"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// The KVM probe's verdict holds until the host reboots or QEMU changes, so
// it is kept in the user's cache: later runs skip the probe (which costs its
// whole timeout on a host where KVM crawls), and --dry-run, which must start
// nothing, can still print the accelerator a run would use.

// probeFile is the verdict's file in owndir.CacheDir(), which is checked
// (the user's, writable by no one else) or not used at all.
const probeFile = "kvm-probe"

// maxProbeFile bounds the verdict's file.
const maxProbeFile = 64 << 10

// probeKey identifies this boot of the host and this QEMU binary.
func probeKey(qemuPath string) (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	st, err := os.Stat(qemuPath)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s %d", strings.TrimSpace(string(boot)), qemuPath, st.ModTime().UnixNano()), nil
}

// cachedProbe returns the remembered verdict: ok, or why KVM failed.
func cachedProbe(qemuPath string) (verdict string, found bool) {
	dir, err := owndir.CacheDir()
	if err != nil {
		return "", false
	}
	key, err := probeKey(qemuPath)
	if err != nil {
		return "", false
	}
	data, err := owndir.ReadFile(dir, probeFile, maxProbeFile) // a link is not followed
	if err != nil {
		return "", false
	}
	k, v, ok := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if !ok || k != key {
		return "", false
	}
	return v, true
}

// rememberProbe stores a verdict; failing to is harmless. The file is
// replaced with one rename of a new file: a link planted at its name is
// replaced, never followed.
func rememberProbe(qemuPath, verdict string) {
	dir, err := owndir.CacheDir()
	if err != nil {
		return
	}
	key, err := probeKey(qemuPath)
	if err != nil {
		return
	}
	owndir.WriteFile(dir, probeFile, []byte(key+"\n"+verdict+"\n"), 0o644)
}
