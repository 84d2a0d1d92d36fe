package vz

import (
	"context"
	"fmt"

	"github.com/sonix-run/sonix-run/vmm"
)

// Backend runs VMs on Virtualization.framework, inside the sonix-run process.
// It is registered on macOS (register_darwin.go) with zero Options; what a
// VM asks for (VM.Rosetta) is merged into them per VM (options).
type Backend struct {
	Options Options
}

func (Backend) Name() string { return "vz" }

// Features: virtio-fs is built into the framework (no virtiofsd), the VM
// runs in-process (no command line), the agent port is a named virtio
// console port, --net none leaves the VM without a network card, and disks
// (--disk, --state) are raw images on virtio block devices.
func (Backend) Features() vmm.Features {
	return vmm.Features{Rosetta: true, Agent: true, NetNone: true, Disks: true}
}

// Commands is never called: Features.CommandLine is false.
func (Backend) Commands(vm *vmm.VM) ([]vmm.Process, error) {
	return nil, fmt.Errorf("the vz backend runs the VM inside sonix-run; there is no command line")
}

// Resolve checks that the plan can be made, without writing anything.
func (b Backend) Resolve(ctx context.Context, vm *vmm.VM, mode vmm.Mode, log vmm.Log) error {
	dryRun := mode == vmm.DryRun
	p, err := NewPlan(vm, b.options(vm))
	if err != nil {
		return err
	}
	if log != nil {
		if p.KernelFormat.Compressed() {
			log.Notice("sonix-run: %s is compressed (%s); it is decompressed into the run directory for Virtualization.framework", p.KernelSource, p.KernelFormat)
		}
		if dryRun {
			log.Notice("sonix-run: the vz backend runs the VM inside sonix-run (Virtualization.framework); there is no VM command to print")
		}
	}
	return nil
}

// options are b.Options with vm's requests (--rosetta) and the host's
// limits filled in where the build can ask the framework for them.
func (b Backend) options(vm *vmm.VM) Options {
	o := b.Options
	o.Rosetta = o.Rosetta || vm.Rosetta
	if o.Limits == (Limits{}) {
		o.Limits = hostLimits()
	}
	return o
}
