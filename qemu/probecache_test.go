package qemu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// probeTest is a QEMU binary stand-in for probeKey (any file does), and
// skips where there is no boot id to key the verdict with.
func probeTest(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err != nil {
		t.Skip("no boot id here: the KVM probe is not cached")
	}
	qemu := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.WriteFile(qemu, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return qemu
}

// A link planted at the verdict's name is neither read nor written
// through: it is replaced, its target untouched.
func TestProbeCacheReplacesPlantedLink(t *testing.T) {
	qemu := probeTest(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, err := owndir.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	key, err := probeKey(qemu)
	if err != nil {
		t.Fatal(err)
	}
	// The target holds a verdict that would pass: read through the link,
	// it would decide the accelerator.
	victim := filepath.Join(t.TempDir(), "bashrc")
	precious := key + "\nok\n"
	os.WriteFile(victim, []byte(precious), 0o600)
	if err := os.Symlink(victim, filepath.Join(dir, probeFile)); err != nil {
		t.Fatal(err)
	}
	if v, found := cachedProbe(qemu); found {
		t.Errorf("the verdict was read through a link: %q", v)
	}
	rememberProbe(qemu, "it crawls")
	if b, _ := os.ReadFile(victim); string(b) != precious {
		t.Errorf("the link's target was written: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(dir, probeFile))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("the verdict's file: %v, %v", fi, err)
	}
	if v, found := cachedProbe(qemu); !found || v != "it crawls" {
		t.Errorf("cachedProbe = %q, %v", v, found)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the cache: %v", entries)
	}
}

// With no usable home (Nix's build sandbox), the verdict is kept in the
// private directory in $TMPDIR.
func TestProbeCacheWithoutHome(t *testing.T) {
	qemu := probeTest(t)
	if _, err := os.Stat("/homeless-shelter"); err == nil {
		t.Skip("/homeless-shelter exists here")
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/homeless-shelter")
	t.Setenv("TMPDIR", t.TempDir())
	rememberProbe(qemu, "ok")
	if _, err := os.Lstat(filepath.Join(owndir.TempBase(), "cache", probeFile)); err != nil {
		t.Error(err)
	}
	if v, found := cachedProbe(qemu); !found || v != "ok" {
		t.Errorf("cachedProbe = %q, %v", v, found)
	}
}

// A cache directory of another user is neither read nor written.
func TestProbeCacheOfAnotherUser(t *testing.T) {
	qemu := probeTest(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root, to make a directory of another uid")
	}
	xdg := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", xdg)
	t.Setenv("TMPDIR", t.TempDir())
	theirs := filepath.Join(xdg, "sonix-run")
	os.Mkdir(theirs, 0o755)
	key, _ := probeKey(qemu)
	os.WriteFile(filepath.Join(theirs, probeFile), []byte(key+"\nok\n"), 0o644)
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if v, found := cachedProbe(qemu); found {
		t.Errorf("a verdict was read from another user's directory: %q", v)
	}
	rememberProbe(qemu, "it crawls")
	if entries, _ := os.ReadDir(theirs); len(entries) != 1 {
		t.Errorf("another user's directory was written: %v", entries)
	}
	if v, found := cachedProbe(qemu); !found || v != "it crawls" {
		t.Errorf("cachedProbe = %q, %v (want the verdict kept in %s)", v, found, owndir.TempBase())
	}
}
