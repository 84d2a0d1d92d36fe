package virtiofs

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Args returns the command line that serves s when run by root (asRoot) or
// by another user. It depends on nothing but its inputs, so --dry-run prints
// exactly what a run executes; each word is one argv element, so a script
// that quotes each for a POSIX shell runs the same command.
//
// A read-only share is read-only on the host:
//   - a Rust daemon with --readonly gets it;
//   - otherwise, as root, the daemon runs under readOnlyView (a private
//     mount namespace with a read-only bind mount of s.Dir);
//   - otherwise the share is refused with ErrNoReadOnly.
//
// A writable share keeps the guest from leaving setuid or setgid files,
// device nodes, or files of owners other than s's (see guard.go): the
// command line holds what the daemon itself can do about it (a Rust daemon
// gives every file the guest makes to the owner; as root, a daemon loses
// CAP_MKNOD, and CAP_FSETID so that writing to a setuid file clears the
// bit); the rest is a seccomp filter that Start puts the daemon under, which
// a command line cannot show. Where there can be no filter, a writable share
// is refused with ErrUnguarded.
//
// Chroot sandboxing needs root; unprivileged, the Rust daemon runs without a
// sandbox (its namespace sandbox would map every file's owner to nobody).
func (d *Daemon) Args(s Share, asRoot bool) ([]string, error) {
	args, _, err := d.command(s, asRoot)
	return args, err
}

// command is Args, and the filter the daemon runs under (nil for a
// read-only share).
func (d *Daemon) command(s Share, asRoot bool) ([]string, *guard, error) {
	if !filepath.IsAbs(s.Dir) || !filepath.IsAbs(s.Socket) {
		return nil, nil, fmt.Errorf("%s: virtiofsd needs absolute paths (directory %q, socket %q)", s, s.Dir, s.Socket)
	}
	var g *guard
	owner := s.owner()
	if !s.ReadOnly {
		if !guardSupported {
			return nil, nil, fmt.Errorf("%s: %w: sonix-run can filter virtiofsd's system calls only on Linux on x86_64 and aarch64, and %s would otherwise store what the guest asks for in %s; share it read-only (--share DIR:TAG:ro, --cwd=ro)",
				s, ErrUnguarded, d.Path, s.Dir)
		}
		// A chroot holds the daemon in the share, so it need not resolve
		// paths with openat2, which the filter cannot see into.
		g = &guard{owner: owner, noOpenat2: asRoot}
	}
	cache := s.Cache
	if cache == "" {
		cache = "auto"
	}
	// Without --readonly, a read-only share is served from the read-only view.
	viewed := s.ReadOnly && !(d.Flavour == Rust && d.ReadOnly)
	source := s.Dir
	if viewed {
		source = readOnlyMountPoint(s.Socket)
	}
	var args []string
	switch d.Flavour {
	case Rust:
		if viewed && !asRoot {
			return nil, nil, fmt.Errorf("%s: %w: %s has no --readonly (Rust virtiofsd before 1.13), and only root can make a read-only view for it, so a guest could change %s; install virtiofsd 1.13 or newer (Nix `nix profile install nixpkgs#virtiofsd`, then point $%s at it if it is not found) or run sonix-run as root",
				s, ErrNoReadOnly, d.Path, s.Dir, EnvVar)
		}
		args = []string{d.Path, "--socket-path=" + s.Socket, "--shared-dir=" + source, "--cache=" + cache}
		if asRoot {
			args = append(args, "--sandbox=chroot")
		} else {
			args = append(args, "--sandbox=none")
		}
		if s.ReadOnly && d.ReadOnly {
			args = append(args, "--readonly")
		}
		if !s.ReadOnly {
			if d.TranslateIDs {
				// Every guest id, root's included, is the owner's on the host.
				args = append(args,
					fmt.Sprintf("--translate-uid=squash-guest:0:%d:%d", owner.uid, allIDs),
					fmt.Sprintf("--translate-gid=squash-guest:0:%d:%d", owner.gid, allIDs))
			}
			if asRoot {
				args = append(args, "--modcaps="+droppedCaps)
			}
		}
		if d.InodeFileHandles {
			args = append(args, "--inode-file-handles=prefer")
		}
	case Legacy:
		if !asRoot {
			return nil, nil, fmt.Errorf("%s: %w (%s); run sonix-run as root or install the Rust virtiofsd: Debian 13+/Ubuntu 24.04+ `apt install virtiofsd`, Nix `nixpkgs#virtiofsd`, then point $%s at it if it is not found",
				s, ErrNeedsRoot, d.Path, EnvVar)
		}
		args = []string{d.Path, "--socket-path=" + s.Socket, "-o", "source=" + escapeFuseOpt(source), "-o", "cache=" + cache, "-o", "sandbox=chroot"}
		if !s.ReadOnly {
			args = append(args, "-o", "modcaps="+droppedCaps)
		}
	default:
		return nil, nil, fmt.Errorf("%s: %s: unknown virtiofsd flavour", s, d.Path)
	}
	if viewed {
		args = readOnlyView(s.Dir, source, args)
	}
	return args, g, nil
}

// allIDs counts every id from 0 but (uid_t)-1, which means "unchanged".
const allIDs = 1<<32 - 1

// droppedCaps are the capabilities a daemon run as root drops for a
// writable share, in the syntax of both flavours' modcaps: without mknod
// it cannot make a device node; without fsetid, its writes to a setuid or
// setgid file clear the bits, as anyone's but root's do.
const droppedCaps = "-mknod:-fsetid"

// readOnlyScript runs as root inside a new mount namespace whose mounts are
// private (nothing propagates to the host's, and the namespace, with its
// mounts, ends with the daemon): it binds $1 on $2, makes that bind
// read-only, and becomes the daemon. The bind is not recursive, so mounts
// below $1 are not served rather than served writable.
const readOnlyScript = `mkdir -p -- "$2" && mount --bind -- "$1" "$2" && mount -o remount,bind,ro -- "$2" && shift 2 && exec "$@"`

// readOnlyView wraps daemon so that it runs in its own mount namespace, where
// mountPoint is a read-only view of dir. Why this way: util-linux's unshare
// and mount and sh are on every Linux host that has virtiofsd, and a
// command line is what --dry-run can print; doing the same from Go would
// need a thread whose namespace is changed for good, and a script that
// differs from what runs. The process sonix-run starts becomes the daemon
// (unshare and sh exec it), so its pid, signals and exit status are the
// daemon's.
func readOnlyView(dir, mountPoint string, daemon []string) []string {
	return append([]string{"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", readOnlyScript, "virtiofsd-readonly", dir, mountPoint}, daemon...)
}

// readOnlyMountPoint is where a read-only view of a share is mounted, next to
// its socket in the run's private directory. Its path is the run's, so it
// holds no comma or backslash that the user's path might have.
func readOnlyMountPoint(socket string) string {
	return strings.TrimSuffix(socket, ".sock") + ".ro"
}

// escapeFuseOpt escapes a value inside the legacy daemon's -o option list,
// which splits at commas and takes a backslash as an escape.
func escapeFuseOpt(s string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`).Replace(s)
}
