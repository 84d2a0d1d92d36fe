package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/virtiofs"
	"github.com/sonix-run/sonix-run/vmm"
)

// QEMU serves a VM's shares through vhost-user-fs: one virtiofsd per share,
// started by the backend before QEMU, listening on a socket in the run
// directory, and stopped after it. Nothing else in sonix-run starts them.

func init() {
	// A run killed outright leaves the legacy daemon's lock files outside
	// its run directory; whoever removes the directory removes them too.
	rundir.AlsoRemove(virtiofs.StaleFiles)
}

// daemonShares are vm's shares as virtiofs serves them.
func daemonShares(vm *vmm.VM) []virtiofs.Share {
	out := make([]virtiofs.Share, len(vm.Shares))
	for n, s := range vm.Shares {
		out[n] = virtiofs.Share{Name: s.Tag, Dir: s.HostDir, Socket: rundir.ShareSocket(vm.RunDir, n), ReadOnly: s.ReadOnly, Cache: string(s.Cache)}
	}
	return out
}

// findDaemon finds virtiofsd and checks that it can serve every share of
// vm as asked (read-only for real, with the guard for writable ones); a
// daemon that cannot (the legacy one without root) is a refusal, found
// before anything starts.
func findDaemon(ctx context.Context, vm *vmm.VM) (*virtiofs.Daemon, error) {
	if len(vm.Shares) == 0 {
		return nil, nil
	}
	if len(vm.Shares) > rundir.MaxShares {
		return nil, fmt.Errorf("%w: %d shares; at most %d", vmm.ErrRefused, len(vm.Shares), rundir.MaxShares)
	}
	d, err := virtiofs.Find(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range daemonShares(vm) {
		if _, err := d.Args(s, os.Geteuid() == 0); err != nil {
			return nil, refusal(err)
		}
	}
	return d, nil
}

// refusal marks virtiofs's errors that say a share cannot be served here
// (nothing was started) as the backend's refusals.
func refusal(err error) error {
	if errors.Is(err, virtiofs.ErrNeedsRoot) || errors.Is(err, virtiofs.ErrNoReadOnly) || errors.Is(err, virtiofs.ErrUnguarded) {
		return fmt.Errorf("%w: %w", vmm.ErrRefused, err)
	}
	return err
}

// shareProcesses are the daemons' command lines, for a dry run.
func shareProcesses(ctx context.Context, vm *vmm.VM) ([]vmm.Process, error) {
	d, err := findDaemon(ctx, vm)
	if err != nil || d == nil {
		return nil, err
	}
	var out []vmm.Process
	for _, s := range daemonShares(vm) {
		argv, err := d.Args(s, os.Geteuid() == 0)
		if err != nil {
			return nil, refusal(err)
		}
		out = append(out, vmm.Process{Argv: argv, Socket: s.Socket, Leftovers: d.Leftovers(s), Note: virtiofs.GuardNote(s)})
	}
	return out, nil
}

// startShares starts vm's daemons and returns once each listens.
func startShares(ctx context.Context, vm *vmm.VM, log vmm.Log) (*virtiofs.Group, error) {
	d, err := findDaemon(ctx, vm)
	if err != nil || d == nil {
		return nil, err
	}
	var out io.Writer
	if log != nil {
		out = log.Output("virtiofsd: ")
	}
	g, err := virtiofs.StartAll(ctx, d, daemonShares(vm), out)
	if err != nil {
		return nil, refusal(err)
	}
	return g, nil
}

// fsdExitGrace is how long a virtiofsd's exit may precede QEMU's own: QEMU
// shutting down disconnects its daemons, which may be seen first.
const fsdExitGrace = 2 * time.Second

// fsdStopGrace is how long the daemons may take to exit once QEMU, which
// they serve, has gone, before they are signalled.
const fsdStopGrace = 2 * time.Second

// watchShares ends the VM when one of its daemons exits under a VM that
// goes on: the guest's I/O on that share would hang. The reason is kept
// for Outcome. It returns when QEMU has exited.
func (m *machine) watchShares() {
	exited := m.fsd.Exited()
	for {
		select {
		case <-m.exited:
			return
		case p := <-exited:
			exited = nil
			t := time.NewTimer(fsdExitGrace)
			select {
			case <-m.exited:
				t.Stop()
				return
			case <-t.C:
			}
			m.mu.Lock()
			m.fsdErr = fmt.Errorf("%w; the guest cannot use that share any more, so the VM was stopped", p.ExitError())
			m.mu.Unlock()
			m.kill()
			return
		}
	}
}
