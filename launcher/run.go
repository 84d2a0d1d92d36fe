package launcher

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/sonix-run/sonix-run/bootjson"
	"github.com/sonix-run/sonix-run/nixbuild"
	"github.com/sonix-run/sonix-run/virtiofs"
)

// Prepare turns a Config into the VM to boot and the backend that boots it,
// checking all input; it starts nothing. Every error is a BadInput *Error.
func Prepare(cfg *Config) (*VM, Backend, error) {
	cfg.setDefaults()
	bad := func(err error) (*VM, Backend, error) { return nil, nil, &Error{Reason: BadInput, Err: err} }
	if cfg.Target == "" {
		return bad(fmt.Errorf("no system to boot: give a boot.json or a NixOS toplevel (e.g. ./result)"))
	}
	if err := checkDir("--store", cfg.StoreDir); err != nil {
		return bad(err)
	}
	if cfg.ModulesDir != "" {
		if err := checkDir("--modules", cfg.ModulesDir); err != nil {
			return bad(err)
		}
	}
	// Helpers run elsewhere (virtiofsd chroots into its directory) and a
	// --dry-run script may be pasted anywhere: every host path is absolute.
	for _, dir := range []*string{&cfg.StoreDir, &cfg.ModulesDir} {
		if *dir != "" {
			abs, err := filepath.Abs(*dir)
			if err != nil {
				return bad(err)
			}
			*dir = abs
		}
	}
	if cfg.ModulesDir != "" {
		cfg.ModulesDir = ModulesTree(cfg.ModulesDir)
	}
	doc, err := bootjson.LoadStore(cfg.Target, cfg.StoreDir)
	if err != nil {
		return bad(err)
	}
	spec, err := doc.Select(cfg.Specialisation)
	if err != nil {
		return bad(err)
	}
	paths, err := spec.Locate(doc.Path, cfg.StoreDir)
	if err != nil {
		return bad(err)
	}
	if paths, err = overrideKernel(cfg, paths); err != nil {
		return bad(err)
	}
	arch, err := ArchOfSystem(spec.System)
	if err != nil {
		return bad(fmt.Errorf("%s: %w", doc.Path, err))
	}
	backend, err := lookupBackend(cfg.Backend)
	if err != nil {
		return bad(err)
	}
	vm := &VM{
		Name:       "sonix-run",
		Arch:       arch,
		Accel:      cfg.Accel,
		CPUs:       cfg.CPUs,
		MemoryMiB:  cfg.MemoryMiB,
		Kernel:     paths.Kernel,
		Initrd:     paths.Initrd,
		BootParams: append([]string{"init=" + spec.Init}, spec.KernelParams...),
		UserParams: cfg.Append,
		GDBPort:    cfg.GDBPort,
		GDBWait:    cfg.GDBWait,
		QEMUArgs:   cfg.QEMUArgs,
		Rosetta:    cfg.Rosetta,
		Shares:     []Share{{Tag: cfg.StoreTag, HostDir: cfg.StoreDir, ReadOnly: true, Cache: CacheAlways}},
	}
	if cfg.ModulesDir != "" {
		vm.Shares = append(vm.Shares, Share{Tag: cfg.ModulesTag, HostDir: cfg.ModulesDir, ReadOnly: true, Cache: CacheAuto})
	}
	if cfg.Command != "" || cfg.Agent {
		vm.Ports = AgentPorts
	}
	if err := addDevices(cfg, vm); err != nil {
		return bad(err)
	}
	if cfg.GDBWait && cfg.GDBPort == 0 {
		return bad(fmt.Errorf("--gdb-wait needs --gdb"))
	}
	if err := vm.Validate(); err != nil {
		return bad(err)
	}
	return vm, backend, nil
}

// addDevices turns --net, --forward, --disk and --share into vm's devices.
func addDevices(cfg *Config, vm *VM) error {
	switch cfg.Net {
	case NetUser, NetNone:
		vm.Network.Mode = cfg.Net
	default:
		return fmt.Errorf("--net %q: expected user or none", cfg.Net)
	}
	for _, f := range cfg.Forwards {
		fw, err := ParseForward(f)
		if err != nil {
			return err
		}
		if cfg.Net == NetNone {
			return fmt.Errorf("--forward %s needs --net user", f)
		}
		vm.Network.Forwards = append(vm.Network.Forwards, fw)
	}
	for _, d := range cfg.Disks {
		disk, err := ParseDisk(d)
		if err != nil {
			return err
		}
		vm.Disks = append(vm.Disks, disk)
	}
	for _, s := range cfg.Shares {
		share, err := ParseShare(s)
		if err != nil {
			return err
		}
		vm.Shares = append(vm.Shares, share)
	}
	return nil
}

// runDirBase is where per-run directories go: $XDG_RUNTIME_DIR (private to
// the user, on tmpfs) when set, else the temporary directory.
func runDirBase() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	return os.TempDir()
}

// assignSockets names each share's virtiofsd socket inside the run directory.
func assignSockets(vm *VM) {
	for i := range vm.Shares {
		vm.Shares[i].Socket = filepath.Join(vm.RunDir, fmt.Sprintf("fs%d-%s.sock", i, safeName(vm.Shares[i].Tag)))
	}
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func daemonShares(vm *VM) []virtiofs.Share {
	var out []virtiofs.Share
	for _, s := range vm.Shares {
		out = append(out, virtiofs.Share{Name: s.Tag, Dir: s.HostDir, Socket: s.Socket, ReadOnly: s.ReadOnly, Cache: string(s.Cache)})
	}
	return out
}

// Run boots the system cfg names and waits until the VM ends. It returns nil
// when the guest powered off cleanly (or, with cfg.Command, when the command
// exited 0), else an *Error saying why not. Whatever ends the run, every
// process it started is stopped and its run directory removed before Run
// returns.
func Run(ctx context.Context, cfg Config) error {
	vm, backend, err := prepareTarget(ctx, &cfg)
	if err != nil {
		return err
	}
	if cfg.DryRun {
		return dryRun(ctx, &cfg, vm, backend)
	}
	inst, err := start(ctx, &cfg, vm, backend)
	if err != nil {
		return err
	}
	if cfg.Command != "" {
		return runCommand(ctx, inst, &cfg)
	}
	return inst.Wait()
}

// Start boots the system cfg names and returns once the VM runs; the
// Instance then supervises it until it ends (Wait).
func Start(ctx context.Context, cfg Config) (*Instance, error) {
	vm, backend, err := prepareTarget(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	return start(ctx, &cfg, vm, backend)
}

// prepareTarget builds a Nix installable if the target is one, then Prepares.
func prepareTarget(ctx context.Context, cfg *Config) (*VM, Backend, error) {
	if nixbuild.IsInstallable(cfg.Target) {
		// A flake output or .nix file: build it first, then boot its toplevel.
		if cfg.Stderr != nil {
			fmt.Fprintf(cfg.Stderr, "sonix-run: building %s\n", cfg.Target)
		}
		toplevel, err := nixbuild.Build(ctx, cfg.Target, cfg.Stderr)
		if err != nil {
			return nil, nil, &Error{Reason: BadInput, Err: err}
		}
		cfg.Target = toplevel
	}
	vm, backend, err := Prepare(cfg)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Kernel != "" || cfg.ModulesDir != "" {
		if w := modulesWarning(vm.Kernel, cfg.ModulesDir); w != "" {
			fmt.Fprintln(cfg.Stderr, w)
		}
	}
	return vm, backend, nil
}

// Instance is a running VM that sonix-run supervises.
type Instance struct {
	r    *run
	done chan struct{}
	err  error

	agentOnce sync.Once
	agent     *Agent
	agentErr  error
}

func start(ctx context.Context, cfg *Config, vm *VM, backend Backend) (*Instance, error) {
	dir, err := os.MkdirTemp(runDirBase(), "sonix-run-") // mode 0700
	if err != nil {
		return nil, fail(Failure, "creating the run directory: %w", err)
	}
	vm.RunDir = dir
	assignSockets(vm)
	r := &run{cfg: cfg, vm: vm, backend: backend, stopReq: make(chan *Error, 1)}
	if err := r.boot(ctx); err != nil {
		return nil, joinTeardown(err, multierror.Append(r.teardown(), removeAll(dir)).ErrorOrNil())
	}
	inst := &Instance{r: r, done: make(chan struct{})}
	go func() {
		err := r.wait(ctx)
		inst.err = joinTeardown(err, multierror.Append(r.teardown(), removeAll(dir)).ErrorOrNil())
		close(inst.done)
	}()
	return inst, nil
}

// Done is closed when the VM has ended and everything is cleaned up.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Wait waits until the VM has ended and everything is cleaned up, and says
// how it ended: nil for a clean poweroff.
func (i *Instance) Wait() error {
	<-i.done
	return i.err
}

// Shutdown presses the guest's power button.
func (i *Instance) Shutdown(ctx context.Context) error { return i.r.machine.Shutdown(ctx) }

// Stop ends the VM at once, with why as the run's result, and waits.
func (i *Instance) Stop(why error) error {
	e, ok := why.(*Error)
	if !ok {
		e = &Error{Reason: Interrupted, Err: why}
	}
	select {
	case i.r.stopReq <- e:
	default: // a stop is already asked for
	}
	return i.Wait()
}

// VM is the description the instance was booted from.
func (i *Instance) VM() *VM { return i.r.vm }

// Command returns the command lines that reproduce this run, for messages.
func (i *Instance) Command() []string {
	argv, _ := i.r.backend.Command(i.r.vm)
	return argv
}

func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the run directory: %w", err)
	}
	return nil
}

// joinTeardown adds teardown errors to the run's result without hiding why
// the run ended.
func joinTeardown(runErr, teardownErr error) error {
	if teardownErr == nil {
		return runErr
	}
	if runErr == nil {
		return &Error{Reason: Failure, Err: fmt.Errorf("cleaning up: %w", teardownErr)}
	}
	e, ok := runErr.(*Error)
	if !ok {
		e = &Error{Reason: Failure, Err: runErr}
	}
	return &Error{Reason: e.Reason, Signal: e.Signal, Err: fmt.Errorf("%w; cleaning up: %v", e.Err, teardownErr)}
}

// run is the state of one boot, for teardown.
type run struct {
	cfg     *Config
	vm      *VM
	backend Backend
	fsd     *virtiofs.Group
	machine Machine
	console *console
	stopReq chan *Error // stops asked for through the Instance
}

// notices is where sonix-run's informational lines go: stderr, except
// that a command's stderr is left to the command unless --verbose.
func (r *run) notices() io.Writer {
	if r.cfg.Command != "" && !r.cfg.Verbose {
		return io.Discard
	}
	return r.cfg.Stderr
}

// diag is where helper processes' own messages go.
func (r *run) diag() io.Writer {
	if r.cfg.Verbose {
		return r.cfg.Stderr
	}
	return nil
}

func (r *run) boot(ctx context.Context) error {
	cfg, vm := r.cfg, r.vm
	if err := r.backend.Resolve(ctx, vm, false, r.notices()); err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	if r.backend.UsesVirtiofsd() && len(vm.Shares) > 0 {
		d, err := virtiofs.Find(ctx)
		if err != nil {
			return &Error{Reason: BadInput, Err: err}
		}
		if r.fsd, err = virtiofs.StartAll(ctx, d, daemonShares(vm), r.diag()); err != nil {
			return &Error{Reason: Failure, Err: err}
		}
	}
	var err error
	if r.console, err = openConsole(cfg); err != nil {
		return &Error{Reason: Failure, Err: err}
	}
	r.machine, err = r.backend.Start(ctx, vm, r.console.guest, cfg.Stderr)
	r.console.started() // the backend holds the guest's ends now
	if err != nil {
		// A virtiofsd that died under QEMU's handshake is often the cause.
		return &Error{Reason: Failure, Err: multierror.Append(err, r.fsd.ExitErrors()...).ErrorOrNil()}
	}
	if vm.GDBPort != 0 { // now, when it is listening
		r.console.notice("%s", gdbNotice(vm))
	}
	return nil
}

// wait supervises the running VM until it ends, acting on signals, the
// timeout, Ctrl-a x and helper failures.
func (r *run) wait(ctx context.Context) error {
	cfg := r.cfg
	var timeout, stopTimeout <-chan time.Time
	if cfg.Timeout > 0 {
		t := time.NewTimer(cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var fsdExited <-chan *virtiofs.Process
	if r.fsd != nil {
		fsdExited = r.fsd.Exited()
	}
	var ended *Error // set when sonix-run decides to end the run
	stop := func(e *Error) {
		if ended == nil {
			ended = e
		}
		r.machine.Stop()
	}
	for {
		select {
		case <-r.machine.Done():
			return r.outcome(ended)
		case p := <-fsdExited:
			// virtiofsd also exits when QEMU, shutting down, disconnects
			// it, and may be seen first; only a VM that goes on is hurt.
			select {
			case <-r.machine.Done():
				return r.outcome(ended)
			case <-time.After(fsdExitGrace):
			}
			stop(&Error{Reason: Failure, Err: fmt.Errorf("%w; the guest cannot use that share any more, so the VM was stopped", p.ExitError())})
		case <-timeout:
			r.console.notice("sonix-run: --timeout %v expired; stopping the VM", cfg.Timeout)
			stop(fail(Timeout, "--timeout %v expired", cfg.Timeout))
		case <-r.console.quit:
			stop(fail(Interrupted, "stopped with Ctrl-a x"))
		case sig := <-cfg.Signals:
			e := &Error{Reason: Interrupted, Signal: sig, Err: fmt.Errorf("stopped by %v", sig)}
			if ended != nil || stopTimeout != nil {
				r.console.notice("sonix-run: %v again: stopping the VM now", sig)
				stop(e)
				continue
			}
			ended = e
			r.console.notice("sonix-run: %v: pressing the guest's power button; waiting up to %v (signal again to stop at once)", sig, cfg.StopTimeout)
			if err := r.machine.Shutdown(ctx); err != nil {
				r.console.notice("sonix-run: power button: %v; stopping the VM", err)
				stop(e)
				continue
			}
			t := time.NewTimer(cfg.StopTimeout)
			defer t.Stop()
			stopTimeout = t.C
		case <-stopTimeout:
			r.console.notice("sonix-run: the guest did not power off within %v; stopping the VM", cfg.StopTimeout)
			stop(ended)
		case e := <-r.stopReq:
			stop(e)
		case <-ctx.Done():
			stop(&Error{Reason: Interrupted, Err: ctx.Err()})
		}
	}
}

// outcome turns how the VM ended into Run's result.
func (r *run) outcome(ended *Error) error {
	out := r.machine.Outcome()
	switch out.Ending {
	case PoweredOff:
		if ended != nil && ended.Signal != nil {
			return ended // powered off because sonix-run was told to stop
		}
		return nil
	case Panicked:
		return fail(GuestPanic, "the guest kernel panicked")
	case Reset:
		if ended != nil {
			return ended
		}
		return fail(GuestReset, "the guest rebooted, which ends the run (a panic that the guest could not report looks the same: give it the pvpanic driver)")
	case Stopped:
		if ended != nil {
			return ended
		}
		return fail(Failure, "the VM was stopped")
	}
	if ended != nil && ended.Reason == Failure {
		return ended
	}
	return &Error{Reason: Failure, Err: out.Err}
}

// teardown stops whatever is still running, in reverse order of starting,
// and collects every error.
func (r *run) teardown() error {
	var errs *multierror.Error
	if r.machine != nil {
		if err := r.machine.Stop(); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	if r.console != nil {
		if err := r.console.close(); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	if r.fsd != nil {
		// They exit by themselves once QEMU disconnects.
		if err := r.fsd.Stop(2 * time.Second); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	return errs.ErrorOrNil()
}

// gdbNotice tells how to attach gdb to the stub.
func gdbNotice(vm *VM) string {
	held := ""
	if vm.GDBWait {
		held = " (CPUs stopped until gdb continues them)"
	}
	return fmt.Sprintf("sonix-run: gdb stub on 127.0.0.1:%d%s; attach with: gdb vmlinux -ex 'target remote 127.0.0.1:%d'", vm.GDBPort, held, vm.GDBPort)
}

// fsdExitGrace is how long a virtiofsd exit may precede QEMU's own when QEMU
// is shutting down.
const fsdExitGrace = 2 * time.Second

// StopSignals are the signals that ask a run to stop.
var StopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
