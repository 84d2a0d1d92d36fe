package owndir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsureRefusesWhatOthersCouldHaveMade(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	readable := filepath.Join(base, "readable")
	os.Mkdir(readable, 0o700)
	os.Chmod(readable, 0o755)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)

	for _, c := range []struct {
		dir  string
		kind Kind
		ok   bool
	}{
		{target, Private, true},
		{link, Private, false},
		{open, Private, false},
		{open, Cache, false},
		{readable, Private, false},
		{readable, Cache, true},
		{file, Cache, false},
	} {
		err := Ensure(c.dir, c.kind)
		var ue *UnsafeError
		if c.ok != (err == nil) || (!c.ok && !errors.As(err, &ue)) {
			t.Errorf("Ensure(%s, %v) = %v", filepath.Base(c.dir), c.kind, err)
		}
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o777 {
		t.Errorf("a refused directory was changed: %v", fi.Mode())
	}
}

func TestEnsureOthersDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another uid")
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	os.Mkdir(dir, 0o700)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var ue *UnsafeError
	if err := Ensure(dir, Private); !errors.As(err, &ue) {
		t.Fatalf("Ensure of another uid's directory: %v", err)
	} else {
		t.Log(err)
	}
}

func TestEnsureMakesPrivate(t *testing.T) {
	old := setUmask(0)
	defer setUmask(old)
	dir := filepath.Join(t.TempDir(), "new")
	if err := Ensure(dir, Private); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", fi.Mode())
	}
}

func TestWriteFileReplacesPlantedLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	os.Symlink(victim, filepath.Join(dir, "verdict"))
	if err := WriteFile(dir, "verdict", []byte("ok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the link's target was written: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(dir, "verdict"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("verdict: %v %v", fi, err)
	}
	if _, err := Create(dir, "verdict", 0o600); err == nil {
		t.Error("Create over an existing file succeeded")
	}
	os.Symlink(victim, filepath.Join(dir, "planted"))
	if _, err := Create(dir, "planted", 0o600); err == nil {
		t.Error("Create through a planted link succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("left behind: %v", entries)
	}
}

// The shape of Nix's build sandbox: HOME=/homeless-shelter (missing),
// no $XDG_CACHE_HOME or $XDG_RUNTIME_DIR, a fresh $TMPDIR.
func TestCacheDirWithoutHome(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("HOME", "/homeless-shelter")
	if _, err := os.Stat("/homeless-shelter"); err == nil {
		t.Skip("/homeless-shelter exists here")
	}
	t.Setenv("TMPDIR", t.TempDir())
	dir, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(TempBase(), "cache"); dir != want {
		t.Errorf("CacheDir = %s, want %s", dir, want)
	}
	if err := Check(TempBase(), Private); err != nil {
		t.Error(err)
	}
	if err := Check(dir, Cache); err != nil {
		t.Error(err)
	}
	n := CacheNotice()
	if n == "" || strings.Contains(n, "\n") || !strings.Contains(n, dir) {
		t.Errorf("notice %q: want one line naming %s", n, dir)
	}
	t.Log(n)
	if bases := RuntimeBases(); len(bases) != 1 || bases[0] != TempBase() {
		t.Errorf("RuntimeBases = %q", bases)
	}
}

// A cache directory that is not usable, with no other place either:
// CacheDir says why, the notice says sonix-run does without.
func TestCacheDirNowhere(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/homeless-shelter")
	t.Setenv("TMPDIR", tmp)
	if err := os.Mkdir(TempBase(), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(TempBase(), 0o777)
	if _, err := CacheDir(); err == nil {
		t.Fatal("CacheDir used an open base")
	}
	n := CacheNotice()
	if !strings.HasPrefix(n, "not caching") || strings.Contains(n, "\n") {
		t.Errorf("notice %q", n)
	}
	if entries, _ := os.ReadDir(TempBase()); len(entries) != 0 {
		t.Errorf("the open base was written: %v", entries)
	}
}

// The usual place is used, and followed afresh when the environment
// changes; no notice.
func TestCacheDirUsual(t *testing.T) {
	for range 2 {
		xdg := t.TempDir()
		t.Setenv("XDG_CACHE_HOME", filepath.Join(xdg, "new")) // its parent is made
		dir, err := CacheDir()
		if want := filepath.Join(xdg, "new", "sonix-run"); err != nil || dir != want {
			t.Errorf("CacheDir = %s, %v; want %s", dir, err, want)
		}
		if n := CacheNotice(); n != "" {
			t.Errorf("notice %q", n)
		}
	}
}

func TestRuntimeDir(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o755)
	link := filepath.Join(base, "link")
	os.Symlink(base, link)
	private := filepath.Join(base, "private")
	os.Mkdir(private, 0o700)
	for _, c := range []struct {
		env  string
		want string
		bad  bool
	}{
		{"", "", false},
		{"relative/dir", "", true},
		{filepath.Join(base, "missing"), "", true},
		{open, "", true},
		{link, "", true},
		{private + "/", private, false},
	} {
		t.Setenv("XDG_RUNTIME_DIR", c.env)
		got, err := RuntimeDir()
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("XDG_RUNTIME_DIR=%q: RuntimeDir = %q, %v", c.env, got, err)
		}
		bases := RuntimeBases()
		if last := bases[len(bases)-1]; last != TempBase() || (c.want != "") != (len(bases) == 2) {
			t.Errorf("XDG_RUNTIME_DIR=%q: RuntimeBases = %q", c.env, bases)
		}
	}
}

func TestReadFileAndOpenLockDoNotFollowLinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	os.Symlink(victim, filepath.Join(dir, "owner.json"))
	if b, err := ReadFile(dir, "owner.json", 100); err == nil {
		t.Errorf("ReadFile followed a link: %q", b)
	}
	os.WriteFile(filepath.Join(dir, "big"), make([]byte, 101), 0o600)
	if _, err := ReadFile(dir, "big", 100); err == nil {
		t.Error("ReadFile read past its limit")
	}
	if b, err := ReadFile(dir, "big", 101); err != nil || len(b) != 101 {
		t.Errorf("ReadFile = %d bytes, %v", len(b), err)
	}

	os.Symlink(victim, filepath.Join(dir, "a.lock"))
	missing := filepath.Join(t.TempDir(), "missing")
	os.Symlink(missing, filepath.Join(dir, "b.lock"))
	for _, name := range []string{"a.lock", "b.lock", "c.lock", "a.lock"} {
		f, err := OpenLock(dir, name)
		if err != nil {
			t.Fatalf("OpenLock(%s): %v", name, err)
		}
		f.WriteString("x")
		f.Close()
		if fi, err := os.Lstat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", name, fi, err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("a link's target was written: %q", b)
	}
	if _, err := os.Lstat(missing); err == nil {
		t.Error("a dangling link's target was made")
	}
	os.Mkdir(filepath.Join(dir, "d.lock"), 0o700)
	if _, err := OpenLock(dir, "d.lock"); err == nil {
		t.Error("OpenLock took a directory")
	}
}
