package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/internal/diskimage"
	"github.com/sonix-run/sonix-run/internal/proc"
	"github.com/sonix-run/sonix-run/vmm"
)

// createDisks creates the images of vm's disks that ask for it (Create)
// and do not exist yet: sparse raw files, or qcow2 through qemu-img. Each
// is made complete under a temporary name, then renamed into place, so
// that a run killed half-way leaves no image that looks ready.
func createDisks(ctx context.Context, vm *vmm.VM) error {
	for _, d := range vm.Disks {
		if d.Create == 0 {
			continue
		}
		var err error
		if d.Format == "qcow2" {
			err = createQcow2(ctx, d.Path, d.Create)
		} else {
			_, err = diskimage.CreateRaw(d.Path, d.Create)
		}
		if err != nil {
			return fmt.Errorf("creating the image %s: %w", d.Path, err)
		}
	}
	return nil
}

// createQcow2 creates path as a qcow2 image of size bytes through qemu-img
// unless it exists, complete before it appears under its name.
func createQcow2(ctx context.Context, path string, size int64) error {
	if _, err := os.Lstat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".creating-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	img := filepath.Join(tmp, "image")
	var out bytes.Buffer
	cmd := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, strconv.FormatInt(size, 10))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := proc.Run(ctx, cmd, time.Second); err != nil {
		return fmt.Errorf("qemu-img create: %v: %s (install qemu-utils, or use a raw image name)", err, strings.TrimSpace(out.String()))
	}
	return os.Rename(img, path)
}

// diskProcesses are the commands that create vm's missing images, for a
// dry run.
func diskProcesses(vm *vmm.VM) []vmm.Process {
	var out []vmm.Process
	for _, d := range vm.Disks {
		if d.Create == 0 {
			continue
		}
		if _, err := os.Lstat(d.Path); err == nil {
			continue
		}
		argv := []string{"truncate", "-s", strconv.FormatInt(d.Create, 10), d.Path}
		if d.Format == "qcow2" {
			argv = []string{"qemu-img", "create", "-q", "-f", "qcow2", d.Path, strconv.FormatInt(d.Create, 10)}
		}
		out = append(out, vmm.Process{Argv: argv, Creates: d.Path})
	}
	return out
}
