//go:build linux

package agent_test

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
)

// makeTree builds the tree the copy tests send both ways.
func makeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(root, 0o755))
	must(os.Mkdir(filepath.Join(root, "private"), 0o700))
	must(os.Mkdir(filepath.Join(root, "private", "deeper"), 0o750))
	must(os.WriteFile(filepath.Join(root, "secret"), []byte("only mine\n"), 0o600))
	must(os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "empty"), nil, 0o644))
	must(os.WriteFile(filepath.Join(root, "private", "deeper", "big"), randomBytes(5<<20, 3), 0o640))
	must(os.WriteFile(filepath.Join(root, "name with spaces ☃"), []byte("x"), 0o444))
	must(os.Symlink("secret", filepath.Join(root, "link-in")))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "link-out")))
	must(os.Symlink("../../..", filepath.Join(root, "private", "link-up")))
	// Fixed times, directories last (writing into one changes its time).
	when := time.Date(2021, 3, 4, 5, 6, 7, 890000000, time.UTC)
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		must(err)
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
		case d.Type().IsRegular():
			must(os.Chtimes(p, when, when))
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		must(os.Chtimes(dirs[i], when, when))
	}
}

type entry struct {
	mode   fs.FileMode
	mtime  time.Time
	digest [32]byte
	link   string
}

func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := entry{mode: fi.Mode()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.link, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			e.digest, e.mtime = sha256.Sum256(b), fi.ModTime()
		default:
			e.mtime = fi.ModTime()
		}
		out[rel] = e
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	a, b := snapshot(t, want), snapshot(t, got)
	for name, e := range a {
		g, ok := b[name]
		switch {
		case !ok:
			t.Errorf("%s: missing from the copy", name)
		case g.mode != e.mode:
			t.Errorf("%s: mode %v, want %v", name, g.mode, e.mode)
		case g.digest != e.digest:
			t.Errorf("%s: contents differ", name)
		case g.link != e.link:
			t.Errorf("%s: link to %q, want %q", name, g.link, e.link)
		case !g.mtime.Equal(e.mtime):
			t.Errorf("%s: mtime %v, want %v", name, g.mtime, e.mtime)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			t.Errorf("%s: in the copy only", name)
		}
	}
}

func TestCopyRoundTrip(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	ctx := testContext(t, time.Minute)
	host, guestDir, back := t.TempDir(), t.TempDir(), t.TempDir()
	src := filepath.Join(host, "tree")
	makeTree(t, src)

	// Into an existing directory: the tree goes inside it.
	if err := p.client.CopyTo(ctx, src, guestDir); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(guestDir, "tree"))
	// To a new name.
	if err := p.client.CopyFrom(ctx, filepath.Join(guestDir, "tree"), filepath.Join(back, "renamed")); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(back, "renamed"))
	// Into an existing directory, twice: the second time files are
	// replaced and directories merged into.
	for i := 0; i < 2; i++ {
		if err := p.client.CopyFrom(ctx, filepath.Join(guestDir, "tree"), back); err != nil {
			t.Fatal(err)
		}
		compareTrees(t, src, filepath.Join(back, "tree"))
	}

	// Single files: into a directory, and as a new name.
	if err := p.client.CopyTo(ctx, filepath.Join(src, "run.sh"), guestDir); err != nil {
		t.Fatal(err)
	}
	if err := p.client.CopyTo(ctx, filepath.Join(src, "secret"), filepath.Join(guestDir, "other-name")); err != nil {
		t.Fatal(err)
	}
	st, out, _, err := run(t, p.client, agent.Command{Shell: "./run.sh; stat -c '%a %s' other-name", Dir: guestDir}, nil)
	if err != nil || st != 0 || out != "ran\n600 10\n" {
		t.Fatalf("copied files: status %d, err %v, out %q", st, err, out)
	}
}

func TestCopyErrors(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	ctx := testContext(t, time.Minute)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)

	var g *agent.GuestError
	err := p.client.CopyFrom(ctx, filepath.Join(dir, "missing"), t.TempDir())
	if !errors.As(err, &g) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing guest source: %v", err)
	}
	err = p.client.CopyTo(ctx, filepath.Join(dir, "file"), filepath.Join(dir, "no-dir", "x"))
	if !errors.As(err, &g) || !strings.Contains(err.Error(), "no-dir") {
		t.Errorf("guest destination without its directory: %v", err)
	}
	err = p.client.CopyTo(ctx, filepath.Join(dir, "sub"), filepath.Join(dir, "file"))
	if !errors.As(err, &g) || !strings.Contains(err.Error(), "with a directory") {
		t.Errorf("a directory onto a file: %v", err)
	}
	if err := p.client.CopyTo(ctx, filepath.Join(dir, "missing"), dir); err == nil || errors.As(err, &g) {
		t.Errorf("missing host source: %v", err)
	}
	if err := p.client.CopyFrom(ctx, filepath.Join(dir, "file"), filepath.Join(dir, "no-dir", "x")); err == nil || errors.As(err, &g) {
		t.Errorf("host destination without its directory: %v", err)
	}
	if err := p.client.CopyTo(ctx, filepath.Join(dir, "file"), "relative"); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("relative guest path: %v", err)
	}
	// A socket cannot be copied: the error names it, and the guest keeps
	// what came before it.
	sockDir := filepath.Join(t.TempDir(), "withsock")
	os.Mkdir(sockDir, 0o755)
	os.WriteFile(filepath.Join(sockDir, "a"), []byte("a"), 0o644)
	st, _, _, err := run(t, p.client, agent.Command{Argv: []string{"python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", filepath.Join(sockDir, "z.sock")}}, nil)
	if err != nil || st != 0 {
		t.Skipf("cannot make a socket with python3: %d %v", st, err)
	}
	err = p.client.CopyTo(ctx, sockDir, filepath.Join(dir, "sockcopy"))
	if err == nil || !strings.Contains(err.Error(), "z.sock: it is a socket") {
		t.Errorf("copying a socket: %v", err)
	}
	// The session is still fine.
	if _, err := p.client.Hello(ctx); err != nil {
		t.Fatal(err)
	}
}
