// Package virtiofs finds, starts, waits for and stops virtiofsd, the daemon
// that serves a host directory to a QEMU guest over vhost-user. Nothing else
// in sonix-run spawns it.
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
}

// SearchPaths are where distributions install virtiofsd, tried after $PATH.
var SearchPaths = []string{"/usr/libexec/virtiofsd", "/usr/lib/virtiofsd", "/usr/lib/qemu/virtiofsd"}

// EnvVar names a virtiofsd binary to use instead of searching.
const EnvVar = "SONIX_VIRTIOFSD"

// ErrNotFound means no virtiofsd binary was found.
var ErrNotFound = errors.New("virtiofsd not found")

// Find locates virtiofsd ($SONIX_VIRTIOFSD, then $PATH, then SearchPaths) and
// asks it what it is.
func Find(ctx context.Context) (*Daemon, error) {
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
		return Inspect(ctx, p)
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

// Detect tells the flavour from a binary's --help text.
func Detect(path, help string) (*Daemon, error) {
	d := &Daemon{Path: path}
	switch {
	case strings.Contains(help, "--shared-dir"):
		d.Flavour = Rust
		d.ReadOnly = strings.Contains(help, "--readonly")
		d.InodeFileHandles = strings.Contains(help, "--inode-file-handles")
	case strings.Contains(help, "-o source="):
		d.Flavour = Legacy
	default:
		return nil, fmt.Errorf("%s does not look like virtiofsd (its --help mentions neither --shared-dir nor -o source=)", path)
	}
	return d, nil
}

// Share is one directory to serve.
type Share struct {
	Name     string // for messages: the guest tag
	Dir      string
	Socket   string
	ReadOnly bool
	Cache    string // "always" or "auto"
}

// ErrNeedsRoot is returned for the legacy daemon when not running as root.
var ErrNeedsRoot = errors.New("the legacy C virtiofsd needs root")

// Args returns the command line that serves s. asRoot picks the sandbox:
// chroot needs root; unprivileged, the Rust daemon runs without a sandbox
// (its namespace sandbox would map every file's owner to nobody).
func (d *Daemon) Args(s Share, asRoot bool) ([]string, error) {
	cache := s.Cache
	if cache == "" {
		cache = "auto"
	}
	switch d.Flavour {
	case Rust:
		args := []string{d.Path, "--socket-path=" + s.Socket, "--shared-dir=" + s.Dir, "--cache=" + cache}
		if asRoot {
			args = append(args, "--sandbox=chroot")
		} else {
			args = append(args, "--sandbox=none")
		}
		if s.ReadOnly && d.ReadOnly {
			args = append(args, "--readonly")
		}
		if d.InodeFileHandles {
			args = append(args, "--inode-file-handles=prefer")
		}
		return args, nil
	case Legacy:
		if !asRoot {
			return nil, fmt.Errorf("%w (%s); run sonix-run as root or install the Rust virtiofsd: Debian 13+/Ubuntu 24.04+ `apt install virtiofsd`, Nix `nixpkgs#virtiofsd`, then point $%s at it if it is not found",
				ErrNeedsRoot, d.Path, EnvVar)
		}
		// No read-only option exists here; the guest mounts the share read-only.
		return []string{d.Path, "--socket-path=" + s.Socket, "-o", "source=" + s.Dir, "-o", "cache=" + cache, "-o", "sandbox=chroot"}, nil
	}
	return nil, fmt.Errorf("%s: unknown virtiofsd flavour", d.Path)
}

// Leftovers are files the daemon serving s leaves behind when it exits, for
// a caller that runs it by hand (sonix-run's own Stop removes them).
func (d *Daemon) Leftovers(s Share) []string {
	if d.Flavour == Legacy {
		return []string{legacyPidFile(s.Socket)}
	}
	return nil
}

// legacyPidFile is where the C daemon, run as root, keeps a lock file that it
// never removes: /run/virtiofsd/ plus the socket path with '/' turned to '.'.
func legacyPidFile(socket string) string {
	return filepath.Join("/run/virtiofsd", strings.ReplaceAll(socket, "/", ".")+".pid")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
