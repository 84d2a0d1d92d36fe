//go:build unix

package vlan

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A link planted at a LAN's lock file is replaced, never followed: its
// target stays as it was, a missing one is not made.
func TestLockReplacesPlantedLink(t *testing.T) {
	base := filepath.Join(t.TempDir(), "vlan")
	if err := ensureDir(base); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "bashrc")
	os.WriteFile(victim, []byte("precious"), 0o600)
	missing := filepath.Join(t.TempDir(), "missing")
	for lan, target := range map[string]string{"lan0": victim, "lan1": missing} {
		p := lanPaths{base: base, lan: lan}
		if err := os.Symlink(target, p.lock()); err != nil {
			t.Fatal(err)
		}
		lk, err := lockLAN(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(p.lock()); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", p.lock(), fi, err)
		}
		lk.removeAndUnlock()
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the link's target was written: %q", b)
	}
	if _, err := os.Lstat(missing); err == nil {
		t.Error("the dangling link's target was made")
	}
}

// DefaultDir is in $XDG_RUNTIME_DIR only when that is usable.
func TestDefaultDirFollowsUsableRuntimeDir(t *testing.T) {
	rt := t.TempDir()
	os.Chmod(rt, 0o700)
	t.Setenv("XDG_RUNTIME_DIR", rt)
	if d := DefaultDir(); d != filepath.Join(rt, "sonix-run-vlan") {
		t.Errorf("DefaultDir = %s", d)
	}
	os.Chmod(rt, 0o755)
	if d := DefaultDir(); filepath.Dir(d) != filepath.Clean(os.TempDir()) {
		t.Errorf("DefaultDir with an open $XDG_RUNTIME_DIR = %s", d)
	}
}
