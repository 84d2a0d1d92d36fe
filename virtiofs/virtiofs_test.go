package virtiofs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func readHelp(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDetect(t *testing.T) {
	tests := []struct {
		help    string
		want    Daemon
		wantErr bool
	}{
		{help: readHelp(t, "help-legacy-7.2.txt"), want: Daemon{Path: "d", Flavour: Legacy}},
		// The legacy daemon run by a user with supplementary groups answers
		// even --help with this, and exits 1.
		{help: "setgroups() failed with error=1:Operation not permitted\n", want: Daemon{Path: "d", Flavour: Legacy}},
		// Debian 13's, as it prints it.
		{help: readHelp(t, "help-rust-1.13.2.txt"), want: Daemon{Path: "d", Flavour: Rust, ReadOnly: true, InodeFileHandles: true, TranslateIDs: true}},
		// An abridged one without the id translation options.
		{help: readHelp(t, "help-rust-1.13.txt"), want: Daemon{Path: "d", Flavour: Rust, ReadOnly: true, InodeFileHandles: true}},
		// Before 1.13 the Rust daemon had no --readonly.
		{help: "Usage: virtiofsd [OPTIONS]\n --shared-dir <dir>\n --sandbox <s>\n", want: Daemon{Path: "d", Flavour: Rust}},
		{help: "usage: something else\n", wantErr: true},
		{help: "", wantErr: true},
	}
	for i, tt := range tests {
		got, err := Detect("d", tt.help)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%d: no error for help %q", i, tt.help)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("%d: got %+v, %v; want %+v", i, got, err, tt.want)
		}
	}
}

// A user who is not root and has the legacy daemon only is told to become
// root or install the Rust daemon, not the daemon's own setgroups() failure.
func TestLegacyUnprivilegedGetsTheNeedsRootMessage(t *testing.T) {
	bin := fakeBinary(t, "#!/bin/sh\necho 'setgroups() failed with error=1:Operation not permitted' >&2\nexit 1\n")
	t.Setenv(EnvVar, bin)
	d, err := find(context.Background(), "")
	if err != nil {
		t.Fatalf("find: %v", err)
	}
	s := Share{Name: "store", Dir: "/nix/store", Socket: "/run/r/s.sock", ReadOnly: true}
	_, err = d.Args(s, false)
	if !errors.Is(err, ErrNeedsRoot) || !strings.Contains(err.Error(), "apt install virtiofsd") {
		t.Errorf("got %v, want %v saying what to install", err, ErrNeedsRoot)
	}
}

func TestFindHonoursEnv(t *testing.T) {
	t.Setenv(EnvVar, filepath.Join(t.TempDir(), "missing"))
	if _, err := Find(context.Background()); err == nil || !strings.Contains(err.Error(), EnvVar) {
		t.Errorf("got %v, want an error naming $%s", err, EnvVar)
	}
}

func TestStaleFiles(t *testing.T) {
	legacyLockDir = t.TempDir()
	t.Cleanup(func() { legacyLockDir = "/run/virtiofsd" })
	base := t.TempDir()
	run := filepath.Join(base, "sonix-run-1")
	other := filepath.Join(base, "sonix-run-1.b") // its lock files share run's prefix
	for _, dir := range []string{run, other} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	touch := func(p string) {
		t.Helper()
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A killed run: its sockets are still there, and two lock files.
	touch(filepath.Join(run, "fs0-store.sock"))
	touch(filepath.Join(run, "fs1-modules.sock"))
	if err := os.Mkdir(filepath.Join(run, "fs0-store.ro"), 0o700); err != nil {
		t.Fatal(err)
	}
	touch(legacyPidFile(filepath.Join(run, "fs0-store.sock")))
	touch(legacyPidFile(filepath.Join(run, "fs1-modules.sock")))
	// A live run next to it.
	touch(filepath.Join(other, "fs0-store.sock"))
	touch(legacyPidFile(filepath.Join(other, "fs0-store.sock")))

	got := StaleFiles(run)
	want := []string{legacyPidFile(filepath.Join(run, "fs0-store.sock")), legacyPidFile(filepath.Join(run, "fs1-modules.sock"))}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("StaleFiles = %q, want %q", got, want)
	}
	if got := StaleFiles(filepath.Join(base, "gone")); got != nil {
		t.Errorf("StaleFiles of a missing directory = %q", got)
	}
}

// fakeBinary writes an executable script and returns its path.
func fakeBinary(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "virtiofsd")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func isEROFS(err error) bool { return errors.Is(err, syscall.EROFS) }
