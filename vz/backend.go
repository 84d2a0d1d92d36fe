package vz

import (
	"context"
	"fmt"
	"io"

	"github.com/sonix-run/sonix-run/launcher"
)

// Backend runs VMs on Virtualization.framework, inside the sonix-run process.
// It is registered on macOS (register_darwin.go) with zero Options; a
// command with flags for them (such as --rosetta) registers a Backend with
// its Options again, which replaces that one.
type Backend struct {
	Options Options
}

func (Backend) Name() string { return "vz" }

// UsesVirtiofsd is false: virtio-fs is built into the framework.
func (Backend) UsesVirtiofsd() bool { return false }

// Command returns nil: the VM runs in-process, there is no command line.
func (Backend) Command(vm *launcher.VM) ([]string, error) { return nil, nil }

// Resolve checks that the plan can be made, without writing anything.
func (b Backend) Resolve(ctx context.Context, vm *launcher.VM, dryRun bool, log io.Writer) error {
	switch {
	case vm.GDBPort != 0:
		return fmt.Errorf("--gdb: Virtualization.framework has no gdb stub; use --backend qemu")
	case len(vm.QEMUArgs) > 0:
		return fmt.Errorf("--qemu-arg needs --backend qemu")
	case len(vm.Network.Forwards) > 0:
		return fmt.Errorf("--forward: the vz backend's NAT network does not forward ports yet; use --backend qemu")
	case len(vm.Ports) > 0:
		return fmt.Errorf("--run and the Go harness need the agent's console ports, which the vz backend does not provide yet (docs/harness.md); use --backend qemu")
	case len(vm.Disks) > 0:
		return fmt.Errorf("--disk: the vz backend does not attach disks yet; use --backend qemu")
	}
	p, err := NewPlan(vm, b.options(vm))
	if err != nil {
		return err
	}
	if log != nil {
		if p.KernelFormat.Compressed() {
			fmt.Fprintf(log, "sonix-run: %s is compressed (%s); it is decompressed into the run directory for Virtualization.framework\n", p.KernelSource, p.KernelFormat)
		}
		if dryRun {
			fmt.Fprintf(log, "sonix-run: the vz backend runs the VM inside sonix-run (Virtualization.framework); there is no VM command to print\n")
		}
	}
	return nil
}

// options are b.Options with vm's requests (--rosetta) and the host's
// limits filled in where the build can ask the framework for them.
func (b Backend) options(vm *launcher.VM) Options {
	o := b.Options
	o.Rosetta = o.Rosetta || vm.Rosetta
	if o.Limits == (Limits{}) {
		o.Limits = hostLimits()
	}
	return o
}
