package launcher

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
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

// ensureState creates the --state image on first use: a sparse raw file,
// or a qcow2 image through qemu-img. An existing image is used as it is.
func ensureState(path string, size int64, msgs *messages) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	tmp := path + ".creating"
	os.Remove(tmp)
	if stateFormat(path) == "qcow2" {
		var out bytes.Buffer
		cmd := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", tmp, fmt.Sprint(size))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := proc.Run(context.Background(), cmd, time.Second); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("--state %s: qemu-img create: %v: %s (install qemu-utils, or use a raw image name)", path, err, strings.TrimSpace(out.String()))
		}
	} else {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("--state %s: %w", path, err)
		}
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("--state %s: %w", path, err)
		}
	}
	// Renamed into place only when complete: a run killed half-way leaves
	// no image that looks ready.
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--state %s: %w", path, err)
	}
	msgs.always("sonix-run: created the state image %s (%d MiB, sparse); the guest formats it on first boot", path, size>>20)
	return nil
}
