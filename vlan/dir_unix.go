//go:build unix

package vlan

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// DefaultDir is the per-user directory of LANs: $XDG_RUNTIME_DIR/sonix-run-vlan
// (a directory only the user can enter), else sonix-run-vlan-UID in the
// temporary directory, whose owner and mode are then checked, since another
// user could have made it first.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "sonix-run-vlan")
	}
	return filepath.Join(os.TempDir(), "sonix-run-vlan-"+strconv.Itoa(os.Getuid()))
}

// ensureDir makes dir (mode 0700) if missing and checks that it is a real
// directory of ours that no one else can enter: the sockets in it give
// access to every VM on its LANs.
func ensureDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err == nil {
		if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask
			return fmt.Errorf("vlan directory %s: %w", dir, err)
		}
	} else if !os.IsExist(err) {
		return fmt.Errorf("vlan directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("vlan directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("vlan directory %s is not a directory (%s); remove it", dir, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("vlan directory %s: cannot read its owner", dir)
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return fmt.Errorf("vlan directory %s belongs to uid %d, not to you (uid %d): another user made it; remove it or set XDG_RUNTIME_DIR", dir, st.Uid, uid)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		return fmt.Errorf("vlan directory %s has mode %04o; expected 0700, so that no other user reaches its sockets", dir, perm)
	}
	return nil
}
