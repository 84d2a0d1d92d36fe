// Package virtiofs finds, starts, waits for and stops virtiofsd, the daemon
// that serves a host directory to a QEMU guest over vhost-user. Nothing else
// in sonix-run spawns it.
//
// A share marked read-only is read-only on the host, whatever the guest
// does (a root guest can remount its side read-write): the Rust daemon gets
// --readonly; a daemon without it runs, as root, over a read-only bind
// mount that exists only in its own mount namespace (see Args).
//
// A writable share takes the guest's files, but never lets the guest leave
// on the host what another local user could turn against the one who ran
// sonix-run (or against root): no setuid or setgid file, no device node, no
// file owned by anyone but that user. See guard.go.
package virtiofs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Flavour is which virtiofsd implementation a binary is.
type Flavour int

const (
	// Rust is the maintained virtiofsd (gitlab.com/virtio-fs/virtiofsd),
	// packaged by Nix and newer distros.
	Rust Flavour = iota + 1
	// Legacy is the C virtiofsd that shipped with QEMU up to 7.2; it needs root.
	Legacy
)

func (f Flavour) String() string {
	switch f {
	case Rust:
		return "rust"
	case Legacy:
		return "legacy C"
	}
	return "unknown"
}

// Daemon is a virtiofsd binary and what it supports.
type Daemon struct {
	Path     string
	Flavour  Flavour
	ReadOnly bool // understands --readonly (Rust >= 1.13)
	// InodeFileHandles: understands --inode-file-handles, which keeps a large
	// store from exhausting file descriptors.
	InodeFileHandles bool
	// TranslateIDs: understands --translate-uid and --translate-gid (Rust
	// >= 1.13), with which it gives every file the guest makes to one owner.
	TranslateIDs bool
}

// SearchPaths are where distributions install virtiofsd, tried after $PATH.
var SearchPaths = []string{"/usr/libexec/virtiofsd", "/usr/lib/virtiofsd", "/usr/lib/qemu/virtiofsd"}

// EnvVar names a virtiofsd binary to use instead of searching.
const EnvVar = "SONIX_VIRTIOFSD"

// ErrNotFound means no virtiofsd binary was found.
var ErrNotFound = errors.New("virtiofsd not found")

// Find locates virtiofsd ($SONIX_VIRTIOFSD, then $PATH, then SearchPaths)
// and tells what it is. What a binary is is remembered in the user's cache
// directory, so its --help runs again only when the binary changes.
func Find(ctx context.Context) (*Daemon, error) {
	return find(ctx, flavourCacheFile())
}

func find(ctx context.Context, cacheFile string) (*Daemon, error) {
	var candidates []string
	if p := os.Getenv(EnvVar); p != "" {
		candidates = []string{p}
	} else {
		if p, err := exec.LookPath("virtiofsd"); err == nil {
			candidates = append(candidates, p)
		}
		candidates = append(candidates, SearchPaths...)
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			if os.Getenv(EnvVar) != "" {
				return nil, fmt.Errorf("$%s=%s: no such file", EnvVar, p)
			}
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs // a --dry-run script may run elsewhere
		}
		if d, ok := cachedDaemon(cacheFile, p); ok {
			return d, nil
		}
		d, err := Inspect(ctx, p)
		if err != nil {
			return nil, err
		}
		rememberDaemon(cacheFile, d)
		return d, nil
	}
	return nil, fmt.Errorf("%w (looked in $PATH and %s); install it: Debian 13+/Ubuntu 24.04+ `apt install virtiofsd`, Fedora `dnf install virtiofsd`, Nix `nix profile install nixpkgs#virtiofsd`; or name it with $%s",
		ErrNotFound, strings.Join(SearchPaths, ", "), EnvVar)
}

// Inspect runs path --help and detects its flavour from what it says.
func Inspect(ctx context.Context, path string) (*Daemon, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Both flavours print help on stdout and exit 0; the output is what counts.
	out, err := exec.CommandContext(ctx, path, "--help").CombinedOutput()
	d, derr := Detect(path, string(out))
	if derr != nil {
		if err != nil {
			return nil, fmt.Errorf("%s --help: %v: %s", path, err, firstLine(string(out)))
		}
		return nil, derr
	}
	return d, nil
}

// legacyNotRoot is how the C daemon answers anything, --help included, when
// run by a user who has supplementary groups but is not root: it drops them
// before it even reads its arguments, and only root may.
const legacyNotRoot = "setgroups() failed"

// Detect tells the flavour from a binary's --help output.
func Detect(path, help string) (*Daemon, error) {
	d := &Daemon{Path: path}
	switch {
	case strings.Contains(help, "--shared-dir"):
		d.Flavour = Rust
		d.ReadOnly = strings.Contains(help, "--readonly")
		d.InodeFileHandles = strings.Contains(help, "--inode-file-handles")
		d.TranslateIDs = strings.Contains(help, "--translate-uid") && strings.Contains(help, "--translate-gid")
	case strings.Contains(help, "-o source="), strings.Contains(help, legacyNotRoot):
		d.Flavour = Legacy
	default:
		return nil, fmt.Errorf("%s does not look like virtiofsd (its --help mentions neither --shared-dir nor -o source=)", path)
	}
	return d, nil
}

// Share is one directory to serve.
type Share struct {
	Name     string // for messages: the guest tag
	Dir      string // absolute
	Socket   string // absolute; its directory is the run's, private to it
	ReadOnly bool
	Cache    string // "always" or "auto"

	testOwner *ids // for tests: instead of the effective ids
}

// ids are a user and group id on the host.
type ids struct{ uid, gid uint32 }

// owner is who owns, on the host, every file the guest makes in s: the user
// running sonix-run (its effective ids). It is the one owner every flavour
// can give them: the legacy daemon, as root, keeps its own ids when the
// filter stops it from taking the guest user's.
func (s Share) owner() ids {
	if s.testOwner != nil {
		return *s.testOwner
	}
	return ids{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
}

func (s Share) String() string { return fmt.Sprintf("share %q (%s)", s.Name, s.Dir) }

// ErrNeedsRoot is returned for the legacy daemon when not running as root.
var ErrNeedsRoot = errors.New("the legacy C virtiofsd needs root")

// ErrNoReadOnly is returned for a read-only share that the daemon cannot
// keep read-only: a Rust daemon older than 1.13 (no --readonly) run by a
// user who is not root (who cannot make a read-only bind mount for it).
var ErrNoReadOnly = errors.New("this virtiofsd cannot serve a share read-only")

// ErrUnguarded is returned for a writable share where sonix-run cannot keep
// the guest from leaving setuid programs, device nodes or files of other
// owners on the host (it needs Linux seccomp, on x86_64 or aarch64).
var ErrUnguarded = errors.New("cannot keep a guest from leaving setuid programs or device nodes in a writable share")

// Leftovers are the files outside the socket's directory that the daemon
// serving s leaves behind when it exits, for a caller that runs it by hand
// (sonix-run's own Stop removes them). Whatever else it leaves (its socket,
// the Rust daemon's lock file, the mount point of a read-only bind) lies in
// the socket's directory, the run's, which the caller removes.
func (d *Daemon) Leftovers(s Share) []string {
	if d.Flavour == Legacy {
		return []string{legacyPidFile(s.Socket)}
	}
	return nil
}

// legacyLockDir is where the legacy daemon, run as root, keeps a lock file
// per socket that it never removes.
var legacyLockDir = "/run/virtiofsd" // a variable for tests

// legacyPidFile is the legacy daemon's lock file for socket: the socket path
// with '/' turned to '.', plus ".pid".
func legacyPidFile(socket string) string {
	return filepath.Join(legacyLockDir, strings.ReplaceAll(socket, "/", ".")+".pid")
}

// StaleFiles lists the files, outside runDir, that daemons of a run whose
// sockets were in runDir left behind when they were killed (the legacy
// daemon's lock files). Call it for a run that is known to be dead, before
// removing runDir: the names are found from the sockets still in it.
func StaleFiles(runDir string) []string {
	entries, err := os.ReadDir(runDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		lock := legacyPidFile(filepath.Join(runDir, e.Name()))
		if st, err := os.Lstat(lock); err == nil && st.Mode().IsRegular() {
			out = append(out, lock)
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
