//go:build linux || darwin

// Package treetest is for tests of copies: it records a directory tree and
// says what changed in it, and makes a home-like tree that a copy must
// never touch.
package treetest

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// T0 is the time of HomeLike's entries.
var T0 = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// Node is what Snapshot keeps of an entry.
type Node struct {
	Mode     fs.FileMode
	UID, GID uint32
	Size     int64
	Sum      [32]byte
	Link     string
	Mtime    time.Time
}

// Snapshot records every entry under root (root itself as "."): type and
// mode, owner, size, contents, link target, modification time.
func Snapshot(t testing.TB, root string) map[string]Node {
	t.Helper()
	out := map[string]Node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := Node{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Size: fi.Size(), Mtime: fi.ModTime()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			n.Link, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			n.Sum = sha256.Sum256(b)
		case fi.IsDir():
			n.Size = 0 // a directory's size says little and varies
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Same fails t unless the two snapshots are equal; rootMtime says whether
// the root's own mtime must be too (creating and removing a temporary
// entry in it changes it).
func Same(t testing.TB, before, after map[string]Node, rootMtime bool) {
	t.Helper()
	for name, b := range before {
		a, ok := after[name]
		if name == "." && !rootMtime {
			a.Mtime = b.Mtime
		}
		switch {
		case !ok:
			t.Errorf("%s: gone", name)
		case a != b:
			t.Errorf("%s: changed: %+v, was %+v", name, a, b)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s: appeared", name)
		}
	}
}

// HomeLike makes a directory with what a copy must never touch: a
// .bashrc, a .ssh (0700) with authorized_keys, a subdirectory, all dated
// T0.
func HomeLike(t testing.TB) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	for _, d := range []struct {
		p    string
		mode fs.FileMode
	}{{home, 0o755}, {filepath.Join(home, ".ssh"), 0o700}, {filepath.Join(home, "src"), 0o750}} {
		if err := os.Mkdir(d.p, d.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d.p, d.mode)
	}
	for _, f := range []struct {
		p, body string
		mode    fs.FileMode
	}{{".bashrc", "alias ls='ls -F'\n", 0o644}, {".ssh/authorized_keys", "ssh-ed25519 AAAA mine\n", 0o600}, {"src/main.go", "package main\n", 0o640}} {
		p := filepath.Join(home, f.p)
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, T0, T0)
	}
	for _, d := range []string{"src", ".ssh", "."} {
		os.Chtimes(filepath.Join(home, d), T0, T0)
	}
	return home
}
