//go:build linux

package agent_test

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	compareTreesMerged(t, want, got, false)
}

// compareTreesMerged compares as compareTrees does; merged says that got
// was merged into, so that its directories kept their own times (the
// kernel's, once their entries changed).
func compareTreesMerged(t *testing.T, want, got string, merged bool) {
	t.Helper()
	a, b := snapshot(t, want), snapshot(t, got)
	for name, e := range a {
		g, ok := b[name]
		if merged && e.mode.IsDir() {
			g.mtime = e.mtime
		}
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
	// replaced and directories merged into, keeping their modes and not
	// taking the archive's times.
	for i := 0; i < 2; i++ {
		if err := p.client.CopyFrom(ctx, filepath.Join(guestDir, "tree"), back); err != nil {
			t.Fatal(err)
		}
		compareTreesMerged(t, src, filepath.Join(back, "tree"), i == 1)
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

// TestCopyToSourceByHandle: CopyTo refuses a named pipe in the tree at
// once (nothing is put in place in the guest), and copies links below the
// source as links, never what they point to.
func TestCopyToSourceByHandle(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	ctx := testContext(t, time.Minute)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("the host's secret\n"), 0o600)
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	os.Symlink(secret, filepath.Join(src, "link"))
	guestDir := t.TempDir()

	if err := p.client.CopyTo(ctx, src, guestDir); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(guestDir, "src", "link")); err != nil || l != secret {
		t.Fatalf("the link: %q %v", l, err)
	}
	// The source itself a link: copied as the link.
	if err := p.client.CopyTo(ctx, filepath.Join(src, "link"), filepath.Join(guestDir, "l2")); err != nil {
		t.Fatal(err)
	}
	if l, _ := os.Readlink(filepath.Join(guestDir, "l2")); l != secret {
		t.Fatalf("the source link was followed: %q", l)
	}

	if err := syscall.Mkfifo(filepath.Join(src, "z-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := p.client.CopyTo(ctx, src, filepath.Join(guestDir, "withfifo"))
	if err == nil || !strings.Contains(err.Error(), "z-fifo: it is a named pipe") {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	if _, err := os.Lstat(filepath.Join(guestDir, "withfifo")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed copy was put in place in the guest: %v", err)
	}
	entries, _ := os.ReadDir(guestDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".sonix-run-cp-") {
			t.Errorf("%s left in the guest", e.Name())
		}
	}
	if _, err := p.client.Hello(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCopySemantics: the docker cp rules of docs/copy.md, both ways,
// through the real guest agent.
func TestCopySemantics(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	ctx := testContext(t, time.Minute)
	src := filepath.Join(t.TempDir(), "tree")
	makeTree(t, src)
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
	for _, dir := range []string{"to", "from"} {
		copy := func(s, d string) error {
			if dir == "to" {
				return p.client.CopyTo(ctx, s, d)
			}
			return p.client.CopyFrom(ctx, s, d)
		}
		t.Run(dir, func(t *testing.T) {
			base := t.TempDir()
			existing := filepath.Join(base, "existing")
			os.Mkdir(existing, 0o751)
			os.Chmod(existing, 0o751)
			os.WriteFile(filepath.Join(existing, "mine"), []byte("mine"), 0o600)
			// SRC/. into an existing directory: the contents merge into
			// it, which keeps its mode.
			if err := copy(src+"/.", existing); err != nil {
				t.Fatal(err)
			}
			if read(filepath.Join(existing, "secret")) != "only mine\n" || read(filepath.Join(existing, "mine")) != "mine" {
				t.Error("SRC/.: contents not merged")
			}
			if fi, _ := os.Stat(existing); fi.Mode().Perm() != 0o751 {
				t.Errorf("SRC/.: the destination's mode changed to %v", fi.Mode())
			}
			// SRC/. to a new name: a copy of the directory.
			if err := copy(src+"/.", filepath.Join(base, "new")); err != nil {
				t.Fatal(err)
			}
			compareTrees(t, src, filepath.Join(base, "new"))
			// A trailing slash on a destination that does not exist: a
			// directory is created, a file refused.
			if err := copy(src, filepath.Join(base, "made")+"/"); err != nil {
				t.Fatal(err)
			}
			compareTrees(t, src, filepath.Join(base, "made"))
			if err := copy(filepath.Join(src, "secret"), filepath.Join(base, "nodir")+"/"); err == nil || !strings.Contains(err.Error(), "no such directory") {
				t.Errorf("a file to a missing DIR/: %v", err)
			}
			// A file into an existing directory, then over itself.
			for i := 0; i < 2; i++ {
				if err := copy(filepath.Join(src, "run.sh"), existing+"/"); err != nil {
					t.Fatal(err)
				}
			}
			if fi, _ := os.Stat(filepath.Join(existing, "run.sh")); fi.Mode().Perm() != 0o755 {
				t.Errorf("run.sh: %v", fi.Mode())
			}
			// SRC/ on a file.
			if err := copy(filepath.Join(src, "secret")+"/", base); err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("a file as SRC/: %v", err)
			}
		})
	}
}

// TestCopyFromUmask: what CopyFrom creates on the host takes the host's
// umask (the guest's agent, as root, keeps modes exactly).
func TestCopyFromUmask(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	ctx := testContext(t, time.Minute)
	src := filepath.Join(t.TempDir(), "out")
	os.Mkdir(src, 0o777)
	os.WriteFile(filepath.Join(src, "exec"), []byte("x"), 0o777)
	os.WriteFile(filepath.Join(src, "data"), []byte("x"), 0o666)
	for _, n := range []string{".", "exec", "data"} {
		os.Chmod(filepath.Join(src, n), map[string]fs.FileMode{".": 0o777, "exec": 0o777, "data": 0o666}[n])
	}
	host := t.TempDir()
	old := syscall.Umask(0o022) // the process's: this test does not run in parallel
	err := p.client.CopyFrom(ctx, src, host)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]fs.FileMode{"out": fs.ModeDir | 0o755, "out/exec": 0o755, "out/data": 0o644} {
		if fi, err := os.Lstat(filepath.Join(host, n)); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v, want %v (%v)", n, fi.Mode(), want, err)
		}
	}
}
