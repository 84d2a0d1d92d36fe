package kernelimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// Links planted at the names of the lock and of the index record are
// replaced, never followed: their targets stay as they were (a missing
// one is not made), and the index is not misled by what a link points to.
func TestCacheReplacesPlantedLinks(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	if err := owndir.Ensure(cache.Dir(), owndir.Cache); err != nil {
		t.Fatal(err)
	}
	img, elf := testBzImage(t, Gzip, true)
	path := writeFile(t, dir, "bzImage", img)
	sum := sha256.Sum256(img)
	key := hex.EncodeToString(sum[:])

	victim := writeFile(t, t.TempDir(), "bashrc", []byte("precious"))
	missing := filepath.Join(t.TempDir(), "missing")
	lock := filepath.Join(cache.Dir(), ".lock-"+key)
	if err := os.Symlink(missing, lock); err != nil {
		t.Fatal(err)
	}
	idx := cache.indexPath(mustStat(t, path))
	if idx == "" {
		t.Skip("no file identity here: no index")
	}
	os.Mkdir(filepath.Dir(idx), 0o700)
	// The index link's target names other content: followed, it would
	// send this image to another entry.
	lie := writeFile(t, t.TempDir(), "lie", []byte(strings.Repeat("ab", 32)))
	if err := os.Symlink(lie, idx); err != nil {
		t.Fatal(err)
	}

	p, note, err := cache.BootableELF(context.Background(), path)
	if err != nil || p == "" {
		t.Fatalf("BootableELF = %q, %q, %v", p, note, err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(elf) {
		t.Error("the cached vmlinux differs")
	}
	if !strings.Contains(p, key) {
		t.Errorf("entry %s is not the image's (%s)", p, key)
	}
	if _, err := os.Lstat(missing); err == nil {
		t.Error("the lock link's target was made")
	}
	for _, f := range []string{lock, idx} {
		if fi, err := os.Lstat(f); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v %v, want a regular file", f, fi, err)
		}
	}
	if b, _ := os.ReadFile(idx); string(b) != key {
		t.Errorf("index record %q, want %s", b, key)
	}
	if b, _ := os.ReadFile(lie); string(b) != strings.Repeat("ab", 32) {
		t.Errorf("the index link's target was written: %q", b)
	}

	// A lock link to an existing file: replaced, the file untouched.
	os.RemoveAll(filepath.Join(cache.Dir(), entryName(key)))
	os.Remove(lock)
	os.Symlink(victim, lock)
	if p, note, err := cache.BootableELF(context.Background(), path); err != nil || p == "" {
		t.Fatalf("BootableELF = %q, %q, %v", p, note, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the lock link's target was written: %q", b)
	}
	if fi, err := os.Lstat(lock); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("lock: %v %v", fi, err)
	}
}

// A cache directory that others may write, or of another user, is not
// used: the kernel boots as it is and the note says why; nothing is
// written there.
func TestCacheRefusesUnsafeDirectory(t *testing.T) {
	dir := t.TempDir()
	img, _ := testBzImage(t, Gzip, true)
	path := writeFile(t, dir, "bzImage", img)
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	cases := map[string]string{open: "mode 0777"}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(dir, "theirs")
		os.Mkdir(theirs, 0o755)
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases[theirs] = "belongs to uid 65534"
	}
	for d, want := range cases {
		for _, fill := range []func(context.Context, string) (string, string, error){NewCache(d, 0).BootableELF, NewCache(d, 0).CachedELF} {
			p, note, err := fill(context.Background(), path)
			if err != nil || p != "" || !strings.Contains(note, want) {
				t.Errorf("%s: %q, %q, %v", d, p, note, err)
			}
		}
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s was written: %v", d, entries)
		}
	}
}

// With no usable home (Nix's build sandbox) the cache is in the private
// directory in $TMPDIR, and works.
func TestDefaultCacheDirWithoutHome(t *testing.T) {
	if _, err := os.Stat("/homeless-shelter"); err == nil {
		t.Skip("/homeless-shelter exists here")
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/homeless-shelter")
	t.Setenv("TMPDIR", t.TempDir())
	d, err := DefaultCacheDir()
	if want := filepath.Join(owndir.TempBase(), "cache", "kernels"); err != nil || d != want {
		t.Fatalf("DefaultCacheDir = %q, %v; want %s", d, err, want)
	}
	img, _ := testBzImage(t, Gzip, true)
	path := writeFile(t, t.TempDir(), "bzImage", img)
	if p, note, err := NewCache(d, 0).BootableELF(context.Background(), path); err != nil || !strings.HasPrefix(p, d+"/") {
		t.Errorf("BootableELF = %q, %q, %v", p, note, err)
	}
}
