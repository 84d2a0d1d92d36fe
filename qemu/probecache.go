package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The KVM probe's verdict holds until the host reboots or QEMU changes, so
// it is kept in the user's cache: later runs skip the probe (which costs its
// whole timeout on a host where KVM crawls), and --dry-run, which must start
// nothing, can still print the accelerator a run would use.

func probeCacheFile() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "sonix-run", "kvm-probe"), nil
}

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
	file, err := probeCacheFile()
	if err != nil {
		return "", false
	}
	key, err := probeKey(qemuPath)
	if err != nil {
		return "", false
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", false
	}
	k, v, ok := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if !ok || k != key {
		return "", false
	}
	return v, true
}

// rememberProbe stores a verdict; failing to is harmless.
func rememberProbe(qemuPath, verdict string) {
	file, err := probeCacheFile()
	if err != nil {
		return
	}
	key, err := probeKey(qemuPath)
	if err != nil {
		return
	}
	if os.MkdirAll(filepath.Dir(file), 0o755) != nil {
		return
	}
	tmp := file + fmt.Sprintf(".%d", os.Getpid())
	if os.WriteFile(tmp, []byte(key+"\n"+verdict+"\n"), 0o644) == nil {
		os.Rename(tmp, file)
	}
}
