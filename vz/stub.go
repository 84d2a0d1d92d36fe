//go:build !(darwin && cgo)

package vz

import (
	"context"
	"errors"
	"runtime"

	"github.com/sonix-run/sonix-run/vmm"
)

// Start fails: this build has no Virtualization.framework adapter.
func (Backend) Start(ctx context.Context, vm *vmm.VM, console vmm.Console, log vmm.Log) (vmm.Machine, error) {
	return nil, errUnavailable()
}

func errUnavailable() error {
	if runtime.GOOS == "darwin" {
		return errors.New("this sonix-run was built without cgo, and the vz backend needs it: rebuild it on macOS with CGO_ENABLED=1 (and the macOS SDK), then sign it (make sign-darwin)")
	}
	return errors.New("the vz backend runs only on macOS")
}

// hostLimits are unknown without the framework.
func hostLimits() Limits { return Limits{} }
