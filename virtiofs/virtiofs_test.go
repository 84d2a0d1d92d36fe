package virtiofs

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
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

func TestArgs(t *testing.T) {
	rust := &Daemon{Path: "/bin/virtiofsd", Flavour: Rust, ReadOnly: true, InodeFileHandles: true}
	oldRust := &Daemon{Path: "/bin/virtiofsd", Flavour: Rust}
	legacy := &Daemon{Path: "/usr/lib/qemu/virtiofsd", Flavour: Legacy}
	store := Share{Name: "store", Dir: "/nix/store", Socket: "/run/r/s.sock", ReadOnly: true, Cache: "always"}
	modules := Share{Name: "modules", Dir: "/lib/modules", Socket: "/run/r/m.sock", ReadOnly: true, Cache: "auto"}
	tests := []struct {
		name    string
		d       *Daemon
		s       Share
		root    bool
		want    []string
		wantErr error
	}{
		{"rust store as root", rust, store, true, []string{"/bin/virtiofsd", "--socket-path=/run/r/s.sock", "--shared-dir=/nix/store", "--cache=always", "--sandbox=chroot", "--readonly", "--inode-file-handles=prefer"}, nil},
		{"rust store unprivileged", rust, store, false, []string{"/bin/virtiofsd", "--socket-path=/run/r/s.sock", "--shared-dir=/nix/store", "--cache=always", "--sandbox=none", "--readonly", "--inode-file-handles=prefer"}, nil},
		{"old rust has no --readonly", oldRust, modules, false, []string{"/bin/virtiofsd", "--socket-path=/run/r/m.sock", "--shared-dir=/lib/modules", "--cache=auto", "--sandbox=none"}, nil},
		{"legacy as root", legacy, store, true, []string{"/usr/lib/qemu/virtiofsd", "--socket-path=/run/r/s.sock", "-o", "source=/nix/store", "-o", "cache=always", "-o", "sandbox=chroot"}, nil},
		{"legacy unprivileged", legacy, store, false, nil, ErrNeedsRoot},
	}
	for _, tt := range tests {
		got, err := tt.d.Args(tt.s, tt.root)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "apt install virtiofsd") {
				t.Errorf("%s: error %v, want %v with what to install", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %q, %v\nwant %q", tt.name, got, err, tt.want)
		}
	}
}

func TestFindHonoursEnv(t *testing.T) {
	t.Setenv(EnvVar, filepath.Join(t.TempDir(), "missing"))
	if _, err := Find(context.Background()); err == nil || !strings.Contains(err.Error(), EnvVar) {
		t.Errorf("got %v, want an error naming $%s", err, EnvVar)
	}
}

// A daemon that dies before listening fails Start at once, quoting its stderr.
func TestStartReportsAnEarlyExit(t *testing.T) {
	script := filepath.Join(t.TempDir(), "fake-virtiofsd")
	os.WriteFile(script, []byte("#!/bin/sh\necho 'fuse: something is badly wrong' >&2\nexit 1\n"), 0o755)
	d := &Daemon{Path: script, Flavour: Rust}
	s := Share{Name: "store", Dir: t.TempDir(), Socket: filepath.Join(t.TempDir(), "s.sock"), Cache: "always"}
	start := time.Now()
	_, err := Start(context.Background(), d, s, nil)
	if err == nil || !strings.Contains(err.Error(), "something is badly wrong") || !strings.Contains(err.Error(), `"store"`) {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("noticing the exit took %v", time.Since(start))
	}
}

// The real legacy daemon, where this machine has it and we are root: it
// starts, listens, and is stopped with its socket and lock file removed.
func TestLegacyDaemonStartsAndStops(t *testing.T) {
	const path = "/usr/lib/qemu/virtiofsd"
	if _, err := os.Stat(path); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and the legacy virtiofsd at " + path)
	}
	d, err := Inspect(context.Background(), path)
	if err != nil || d.Flavour != Legacy {
		t.Fatalf("Inspect: %+v, %v", d, err)
	}
	run := t.TempDir()
	s := Share{Name: "store", Dir: t.TempDir(), Socket: filepath.Join(run, "s.sock"), ReadOnly: true, Cache: "always"}
	p, err := Start(context.Background(), d, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(legacyPidFile(s.Socket)); err != nil {
		t.Errorf("expected the daemon's lock file: %v", err)
	}
	// Nobody connects, so it must be stopped by signal.
	if err := p.Stop(0); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("kill", "-0", strconv.Itoa(p.cmd.Process.Pid)).Run(); err == nil {
		t.Error("virtiofsd still runs after Stop")
	}
	for _, f := range []string{s.Socket, legacyPidFile(s.Socket)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}
	if _, err := net.Dial("unix", s.Socket); err == nil {
		t.Error("socket still accepts")
	}
}
