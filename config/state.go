package config

import (
	"strings"

	"github.com/sonix-run/sonix-run/vmm"
)

// The contract with the guest (nix/guest-module.nix, the test system) for
// the extras sonix-run shares.
const (
	// WorkdirTag is the virtio-fs tag of --cwd's directory, mounted in the
	// guest at the same path before the command runs.
	WorkdirTag = "sonix-cwd"
	// StateSerial is the serial of the --state disk: the guest finds it as
	// /dev/disk/by-id/virtio-sonix-state (or /sys/block/*/serial).
	StateSerial = vmm.StateSerial
	// StateParam tells the guest that its state disk is attached.
	StateParam = "sonix.state"
)

// stateFormat is the format of a --state image: qcow2 for a .qcow2 name,
// raw otherwise (raw works under every backend).
func stateFormat(path string) string {
	if strings.HasSuffix(path, ".qcow2") {
		return "qcow2"
	}
	return "raw"
}

// The per-run metadata share: what the guest should know about itself that
// only the host can tell (nix/guest-module.nix reads it).
const (
	// MetaTag is the virtio-fs tag of the per-run metadata directory.
	MetaTag = "sonix-run-meta"
	// RegistrationFile, in it, is `nix-store --dump-db` of the system's
	// closure: the guest loads it so that Nix inside knows the store paths
	// it sees (the store is shared, its database is not).
	RegistrationFile = "registration"
)
