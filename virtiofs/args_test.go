package virtiofs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The command line of every flavour, as root or not, read-only or not, for a
// plain path and one with every character that has bitten before.
func TestArgs(t *testing.T) {
	rust := &Daemon{Path: "/bin/virtiofsd", Flavour: Rust, ReadOnly: true, InodeFileHandles: true, TranslateIDs: true}
	oldRust := &Daemon{Path: "/bin/virtiofsd", Flavour: Rust}
	legacy := &Daemon{Path: "/usr/lib/qemu/virtiofsd", Flavour: Legacy}

	const awkward = `/src/a,b\c d'e`
	plainRO := Share{Name: "store", Dir: "/nix/store", Socket: "/run/r/fs0-store.sock", ReadOnly: true, Cache: "always"}
	// What the guest makes in a writable share is root's when root runs
	// sonix-run, else the user's (1000, group 100).
	root, user := &ids{0, 0}, &ids{1000, 100}
	plainRW := Share{Name: "work", Dir: "/home/u/w", Socket: "/run/r/fs1-work.sock", Cache: "auto", testOwner: root}
	userRW := plainRW
	userRW.testOwner = user
	oddRO := Share{Name: "odd", Dir: awkward, Socket: "/run/r/fs2-odd.sock", ReadOnly: true, Cache: "always"}
	oddRW := Share{Name: "odd", Dir: awkward, Socket: "/run/r/fs2-odd.sock", Cache: "auto", testOwner: root}
	userOddRW := oddRW
	userOddRW.testOwner = user
	// The run directory is the user's choice too ($XDG_RUNTIME_DIR).
	oddRun := Share{Name: "store", Dir: "/nix/store", Socket: `/run/x,y\z/fs0-store.sock`, ReadOnly: true, Cache: "always"}

	wrap := func(dir, mnt string, daemon ...string) []string {
		return append([]string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
			`mkdir -p -- "$2" && mount --bind -- "$1" "$2" && mount -o remount,bind,ro -- "$2" && shift 2 && exec "$@"`,
			"virtiofsd-readonly", dir, mnt}, daemon...)
	}
	tests := []struct {
		name    string
		d       *Daemon
		s       Share
		root    bool
		want    []string
		wantErr error
	}{
		// Rust with --readonly: the daemon enforces it, as root or not.
		{"rust ro root", rust, plainRO, true, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs0-store.sock", "--shared-dir=/nix/store", "--cache=always", "--sandbox=chroot", "--readonly", "--inode-file-handles=prefer"}, nil},
		{"rust ro user", rust, plainRO, false, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs0-store.sock", "--shared-dir=/nix/store", "--cache=always", "--sandbox=none", "--readonly", "--inode-file-handles=prefer"}, nil},
		// Writable: every guest id is the owner's; as root, no mknod and no
		// fsetid (the rest is the filter, TestGuard).
		{"rust rw root", rust, plainRW, true, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs1-work.sock", "--shared-dir=/home/u/w", "--cache=auto", "--sandbox=chroot",
			"--translate-uid=squash-guest:0:0:4294967295", "--translate-gid=squash-guest:0:0:4294967295", "--modcaps=-mknod:-fsetid", "--inode-file-handles=prefer"}, nil},
		{"rust rw user", rust, userRW, false, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs1-work.sock", "--shared-dir=/home/u/w", "--cache=auto", "--sandbox=none",
			"--translate-uid=squash-guest:0:1000:4294967295", "--translate-gid=squash-guest:0:100:4294967295", "--inode-file-handles=prefer"}, nil},
		{"rust ro root odd", rust, oddRO, true, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs2-odd.sock", `--shared-dir=/src/a,b\c d'e`, "--cache=always", "--sandbox=chroot", "--readonly", "--inode-file-handles=prefer"}, nil},
		{"rust rw user odd", rust, userOddRW, false, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs2-odd.sock", `--shared-dir=/src/a,b\c d'e`, "--cache=auto", "--sandbox=none",
			"--translate-uid=squash-guest:0:1000:4294967295", "--translate-gid=squash-guest:0:100:4294967295", "--inode-file-handles=prefer"}, nil},

		// Rust before 1.13: root serves a read-only view; a user cannot.
		{"old rust ro root", oldRust, plainRO, true, wrap("/nix/store", "/run/r/fs0-store.ro",
			"/bin/virtiofsd", "--socket-path=/run/r/fs0-store.sock", "--shared-dir=/run/r/fs0-store.ro", "--cache=always", "--sandbox=chroot"), nil},
		{"old rust ro root odd", oldRust, oddRO, true, wrap(awkward, "/run/r/fs2-odd.ro",
			"/bin/virtiofsd", "--socket-path=/run/r/fs2-odd.sock", "--shared-dir=/run/r/fs2-odd.ro", "--cache=always", "--sandbox=chroot"), nil},
		{"old rust ro user", oldRust, plainRO, false, nil, ErrNoReadOnly},
		{"old rust ro user odd", oldRust, oddRO, false, nil, ErrNoReadOnly},
		// Without --translate-uid, the filter alone keeps the owner's ids.
		{"old rust rw root", oldRust, plainRW, true, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs1-work.sock", "--shared-dir=/home/u/w", "--cache=auto", "--sandbox=chroot", "--modcaps=-mknod:-fsetid"}, nil},
		{"old rust rw user", oldRust, userRW, false, []string{"/bin/virtiofsd", "--socket-path=/run/r/fs1-work.sock", "--shared-dir=/home/u/w", "--cache=auto", "--sandbox=none"}, nil},

		// Legacy: root only; read-only through the view; its -o list escaped.
		{"legacy ro root", legacy, plainRO, true, wrap("/nix/store", "/run/r/fs0-store.ro",
			"/usr/lib/qemu/virtiofsd", "--socket-path=/run/r/fs0-store.sock", "-o", "source=/run/r/fs0-store.ro", "-o", "cache=always", "-o", "sandbox=chroot"), nil},
		{"legacy ro root odd", legacy, oddRO, true, wrap(awkward, "/run/r/fs2-odd.ro",
			"/usr/lib/qemu/virtiofsd", "--socket-path=/run/r/fs2-odd.sock", "-o", "source=/run/r/fs2-odd.ro", "-o", "cache=always", "-o", "sandbox=chroot"), nil},
		{"legacy ro root odd run dir", legacy, oddRun, true, wrap("/nix/store", `/run/x,y\z/fs0-store.ro`,
			"/usr/lib/qemu/virtiofsd", `--socket-path=/run/x,y\z/fs0-store.sock`, "-o", `source=/run/x\,y\\z/fs0-store.ro`, "-o", "cache=always", "-o", "sandbox=chroot"), nil},
		{"legacy rw root", legacy, plainRW, true, []string{"/usr/lib/qemu/virtiofsd", "--socket-path=/run/r/fs1-work.sock", "-o", "source=/home/u/w", "-o", "cache=auto", "-o", "sandbox=chroot", "-o", "modcaps=-mknod:-fsetid"}, nil},
		{"legacy rw root odd", legacy, oddRW, true, []string{"/usr/lib/qemu/virtiofsd", "--socket-path=/run/r/fs2-odd.sock", "-o", `source=/src/a\,b\\c d'e`, "-o", "cache=auto", "-o", "sandbox=chroot", "-o", "modcaps=-mknod:-fsetid"}, nil},
		{"legacy ro user", legacy, plainRO, false, nil, ErrNeedsRoot},
		{"legacy rw user odd", legacy, oddRW, false, nil, ErrNeedsRoot},
	}
	for _, tt := range tests {
		if !tt.s.ReadOnly && !guardSupported && tt.wantErr == nil {
			tt.want, tt.wantErr = nil, ErrUnguarded
		}
		got, err := tt.d.Args(tt.s, tt.root)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: error %v, want %v", tt.name, err, tt.wantErr)
				continue
			}
			// What to do about it, and which share it is.
			todo := []string{"install", "root"}
			if errors.Is(err, ErrUnguarded) {
				todo = []string{"read-only", ":ro"}
			}
			for _, want := range append(todo, `"`+tt.s.Name+`"`, tt.s.Dir) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error %q does not mention %q", tt.name, err, want)
				}
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %q, %v\nwant %q", tt.name, got, err, tt.want)
		}
	}
}

// A writable share's daemon runs under the filter, for the share's owner; a
// read-only one's does not. Chrooted (as root), it loses openat2.
func TestArgsGuard(t *testing.T) {
	if !guardSupported {
		t.Skip("no filter on this system")
	}
	d := &Daemon{Path: "/bin/virtiofsd", Flavour: Rust, ReadOnly: true, TranslateIDs: true}
	legacy := &Daemon{Path: "/usr/lib/qemu/virtiofsd", Flavour: Legacy}
	owner := &ids{1000, 100}
	rw := Share{Name: "work", Dir: "/w", Socket: "/run/r/fs1-work.sock", testOwner: owner}
	ro := Share{Name: "store", Dir: "/nix/store", Socket: "/run/r/fs0-store.sock", ReadOnly: true}
	for _, tt := range []struct {
		d    *Daemon
		s    Share
		root bool
		want *guard
	}{
		{d, rw, true, &guard{owner: *owner, noOpenat2: true}},
		{d, rw, false, &guard{owner: *owner}},
		{legacy, rw, true, &guard{owner: *owner, noOpenat2: true}},
		{d, ro, true, nil},
		{d, ro, false, nil},
		{legacy, ro, true, nil},
	} {
		_, g, err := tt.d.command(tt.s, tt.root)
		if err != nil || !reflect.DeepEqual(g, tt.want) {
			t.Errorf("%s %s root=%v: guard %+v, %v; want %+v", tt.d.Flavour, tt.s.Name, tt.root, g, err, tt.want)
		}
	}
	// Without an owner, the user running it.
	rw.testOwner = nil
	if _, g, _ := d.command(rw, false); g == nil || g.owner != (ids{uint32(os.Geteuid()), uint32(os.Getegid())}) {
		t.Errorf("guard %+v, want the effective ids", g)
	}
}

func TestArgsRefusesRelativePaths(t *testing.T) {
	d := &Daemon{Path: "/bin/virtiofsd", Flavour: Rust, ReadOnly: true}
	for _, s := range []Share{
		{Name: "store", Dir: "store", Socket: "/run/r/s.sock"},
		{Name: "store", Dir: "/nix/store", Socket: "s.sock"},
	} {
		if _, err := d.Args(s, true); err == nil || !strings.Contains(err.Error(), "absolute") {
			t.Errorf("%+v: got %v, want an error about relative paths", s, err)
		}
	}
}

// The legacy daemon's option parser gives back exactly the path that was
// escaped: a comma splits options only when bare.
func TestEscapeFuseOpt(t *testing.T) {
	for in, want := range map[string]string{
		"/nix/store":  "/nix/store",
		"/a,b":        `/a\,b`,
		`/a\b`:        `/a\\b`,
		`/a\,b`:       `/a\\\,b`,
		`/a\123`:      `/a\\123`, // not an octal escape
		"/sp ace'q\"": "/sp ace'q\"",
	} {
		if got := escapeFuseOpt(in); got != want {
			t.Errorf("escapeFuseOpt(%q) = %q, want %q", in, got, want)
		}
	}
}

// The read-only view, run for real with a stand-in for the daemon that tries
// to write through it: the write fails, the source is unchanged, and the
// bind mount is not seen outside the daemon's namespace.
func TestReadOnlyViewRefusesWrites(t *testing.T) {
	requireRootAndUnshare(t)
	dir := filepath.Join(t.TempDir(), `a,b\c d'e`)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	mnt := readOnlyMountPoint(filepath.Join(run, "fs0-x.sock"))
	probe := `cat "$1/f" && echo changed > "$1/f"; touch "$1/new"; rm -f "$1/f"; chmod 777 "$1/f"; mkdir "$1/d"; mv "$1/f" "$1/g"; ` +
		`grep -c " $1 ro," /proc/self/mountinfo`
	argv := readOnlyView(dir, mnt, []string{"sh", "-c", probe, "probe", mnt})
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
	text := string(out)
	if !strings.HasPrefix(text, "original\n") || !strings.HasSuffix(text, "\n1\n") {
		t.Errorf("the stand-in saw:\n%s\nwant the file read, and one read-only mount at %s", text, mnt)
	}
	if n := strings.Count(text, "Read-only file system"); n < 5 {
		t.Errorf("%d writes failed with EROFS, want 5:\n%s", n, text)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "original\n" {
		t.Errorf("the source file is now %q, %v", b, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the source holds %d entries, want 1", len(entries))
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mountinfo), run) {
		t.Errorf("the view is mounted on the host:\n%s", mountinfo)
	}
}

func requireRootAndUnshare(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the read-only view is a bind mount")
	}
	for _, p := range []string{"unshare", "mount", "sh"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs util-linux: %v", err)
		}
	}
}

func TestGuardNote(t *testing.T) {
	if n := GuardNote(Share{Name: "store", ReadOnly: true}); n != "" {
		t.Errorf("a read-only share has a note: %q", n)
	}
	n := GuardNote(Share{Name: "work", testOwner: &ids{1000, 100}})
	if !strings.HasPrefix(n, `# "work": `) || !strings.Contains(n, "seccomp") || !strings.Contains(n, "1000:100") || strings.Contains(n, "\n") {
		t.Errorf("note %q", n)
	}
}
