//go:build unix

package vlan

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// DefaultDir is the per-user directory of LANs: sonix-run-vlan in
// $XDG_RUNTIME_DIR when that is set and usable (owndir.RuntimeDir: the
// user's, private), else sonix-run-vlan-UID in the temporary directory.
// Either is checked before use (ensureDir), since another user could have
// made it first.
func DefaultDir() string {
	if d, _ := owndir.RuntimeDir(); d != "" {
		return filepath.Join(d, "sonix-run-vlan")
	}
	return filepath.Join(os.TempDir(), "sonix-run-vlan-"+strconv.Itoa(os.Geteuid()))
}

// ensureDir makes dir (mode 0700) if missing and checks that it is a real
// directory of ours that no one else can enter: the sockets in it give
// access to every VM on its LANs. One that fails is refused, never
// repaired.
func ensureDir(dir string) error {
	if err := owndir.Ensure(dir, owndir.Private); err != nil {
		return fmt.Errorf("vlan directory: %w", err)
	}
	return nil
}
