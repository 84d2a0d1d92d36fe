package launcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/nixbuild"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vlan"
	"github.com/sonix-run/sonix-run/vmm"
)

// StopSignals are the signals that ask a run to stop.
var StopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// Run boots the system cfg names and waits until the VM ends. It returns nil
// when the guest powered off cleanly (or, with cfg.Command, when the command
// exited 0), else an *Error saying why not. Whatever ends the run, every
// process it started is stopped and its run directory removed before Run
// returns.
func Run(ctx context.Context, cfg config.Config) error {
	inst, err := start(ctx, cfg)
	if err != nil || inst == nil { // nil: a dry run, printed
		return err
	}
	if inst.cfg.Command != nil {
		return inst.runCommand()
	}
	return inst.Wait()
}

// Start boots the system cfg names and returns once the VM runs; the
// Instance then supervises it until it ends (Wait). cfg.DryRun is refused.
func Start(ctx context.Context, cfg config.Config) (*Instance, error) {
	if cfg.DryRun {
		return nil, &Error{Reason: BadInput, Err: errors.New("Start cannot do a dry run; use Run")}
	}
	return start(ctx, cfg)
}

// Instance is a running VM that sonix-run supervises.
type Instance struct {
	cfg      config.Config
	vm       *vmm.VM
	backend  vmm.Backend
	msgs     *messages
	out      *output
	toplevel string // the system's store path
	// named: the user named the VM; else defaultBase is what its name was
	// made from.
	named       bool
	defaultBase string
	cl          cleanups

	console *console
	machine vmm.Machine
	link    *agent.Link
	agent   *agent.Client
	ctl     *controlServer

	// guestReady is closed once the guest is prepared for commands (the
	// --cwd mount); guestErr then says whether that failed.
	guestReady chan struct{}
	guestErr   error

	stopReq     chan stopRequest // stops asked for through the Instance
	done        chan struct{}
	err         error
	teardownErr error
}

type stopRequest struct {
	why      *Error
	graceful bool // press the power button first, stop after StopTimeout
}

// early watches for a stop signal while the run prepares and boots: the
// first one cancels everything at once. Once the VM runs, the supervisor
// takes the signals over (handOver).
type early struct {
	once   sync.Once
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	sig    os.Signal
}

func watchEarly(signals <-chan os.Signal, cancel context.CancelFunc) *early {
	e := &early{cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		select {
		case sig := <-signals:
			e.mu.Lock()
			e.sig = sig
			e.mu.Unlock()
			cancel()
		case <-e.stop:
		}
	}()
	return e
}

// handOver stops watching and returns the signal seen, if any.
func (e *early) handOver() os.Signal {
	e.once.Do(func() { close(e.stop) })
	<-e.done
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sig
}

func start(parent context.Context, cfg config.Config) (*Instance, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.CheckValues(); err != nil {
		return nil, bad(err)
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	watch := watchEarly(cfg.Signals, cancel)
	interrupted := func(err error) error {
		if sig := watch.handOver(); sig != nil {
			return &Error{Reason: Interrupted, Signal: sig, Err: fmt.Errorf("stopped by %v before the VM ran", sig)}
		}
		if parent.Err() != nil {
			return &Error{Reason: Interrupted, Err: parent.Err()}
		}
		return err
	}
	msgs := newMessages(cfg.Stderr, cfg.Command != nil && !cfg.Verbose, cfg.Verbose)

	var toplevel string
	if nixbuild.IsInstallable(cfg.Target) {
		if !cfg.DryRun {
			if err := nixbuild.Check(cfg.Target); err != nil {
				return nil, interrupted(bad(err))
			}
		}
		if err := cfg.CheckHost(); err != nil {
			return nil, interrupted(bad(err))
		}
		if cfg.DryRun {
			watch.handOver()
			return nil, printNixBuild(&cfg)
		}
		// A flake output or .nix file: build it first, then boot its toplevel.
		msgs.always("sonix-run: building %s", cfg.Target)
		built, err := nixbuild.Build(ctx, cfg.Target, cfg.Stderr)
		if err != nil {
			return nil, interrupted(&Error{Reason: BadInput, Err: err})
		}
		cfg.Target, toplevel = built, built
	}
	p, err := config.Prepare(cfg)
	if err != nil {
		return nil, interrupted(bad(err))
	}
	if toplevel == "" {
		toplevel = p.Toplevel
	}
	if err := config.Preflight(ctx, p, msgs.always); err != nil {
		return nil, interrupted(bad(err))
	}
	if w := config.ModulesWarning(p); w != "" {
		msgs.always("%s", w)
	}
	if cfg.DryRun {
		watch.handOver()
		return nil, dryRun(ctx, p, msgs)
	}
	rundir.Reap() // the directories of runs that died without cleaning up
	named := p.VM.Name != ""
	if !named {
		p.VM.Name = rundir.FreeName(defaultNameBase(toplevel))
	}
	inst := &Instance{cfg: p.Config, vm: p.VM, backend: p.Backend, msgs: msgs,
		stopReq: make(chan stopRequest, 1), done: make(chan struct{})}
	inst.cfg.Name = p.VM.Name
	inst.named, inst.defaultBase = named, defaultNameBase(toplevel)
	inst.toplevel = toplevel
	if err := inst.boot(ctx); err != nil {
		err = interrupted(err)
		return nil, joinTeardown(err, inst.cl.run())
	}
	if sig := watch.handOver(); sig != nil || parent.Err() != nil {
		// A signal came as the VM started: end it at once, as during boot.
		err := interrupted(nil)
		inst.machine.Stop(context.Background())
		return nil, joinTeardown(err, inst.cl.run())
	}
	go func() {
		err := inst.supervise(parent)
		inst.teardownErr = inst.cl.run()
		inst.err = joinTeardown(err, inst.teardownErr)
		close(inst.done)
	}()
	return inst, nil
}

// boot starts everything the VM needs, then the VM, pushing each undo on
// the cleanup stack as it goes.
func (i *Instance) boot(ctx context.Context) error {
	cfg, vm := &i.cfg, i.vm
	dir, err := rundir.Create(vm.Name, cfg.Target, cfg.Workdir)
	// A name sonix-run picked may have been taken by a run that started at
	// the same moment: take the next one. A name the user gave is theirs.
	for n := 2; errors.Is(err, rundir.ErrRunning) && !i.named && n < 100; n++ {
		vm.Name = fmt.Sprintf("%s-%d", i.defaultBase, n)
		dir, err = rundir.Create(vm.Name, cfg.Target, cfg.Workdir)
	}
	if err != nil {
		return &Error{Reason: BadInput, Err: err} // nothing was started
	}
	i.cfg.Name = vm.Name
	vm.RunDir = dir
	i.cl.push("run directory", 5*time.Second, func(context.Context) error { return rundir.Remove(dir) })
	i.out = newOutput(cfg, &i.cl)
	i.msgs.w = i.out.stderr
	// Once per run: where sonix-run keeps its files, when that is not
	// where the user would expect.
	if n := rundir.Notice(dir); n != "" {
		i.msgs.notice("%s", n)
	}
	if n := owndir.CacheNotice(); n != "" {
		i.msgs.notice("sonix-run: %s", n)
	}
	i.addRegistration(ctx, i.toplevel)
	i.msgs.detail("sonix-run: VM %q (sonix-run exec %s -- COMMAND); its run directory is %s", vm.Name, vm.Name, dir)
	if err := i.backend.Resolve(ctx, vm, vmm.Boot, i.msgs); err != nil {
		if ctx.Err() != nil {
			return &Error{Reason: Interrupted, Err: ctx.Err()}
		}
		return &Error{Reason: BadInput, Err: err}
	}
	for n := range vm.Network.VLANs {
		v := &vm.Network.VLANs[n]
		port, err := vlan.Join(ctx, v.LAN, vm.Name)
		if err != nil {
			if ctx.Err() != nil {
				return &Error{Reason: Interrupted, Err: ctx.Err()}
			}
			return &Error{Reason: Failure, Err: fmt.Errorf("--vlan %s: %w", v.LAN, err)}
		}
		i.cl.push("--vlan "+v.LAN, 6*time.Second, func(context.Context) error { return port.Close() })
		v.Socket, v.MAC = port.Socket, port.MAC.String()
		if v.Addr.IsValid() {
			// The guest's address on this LAN, on the NIC with this MAC.
			vm.UserParams = append([]string{"sonix.ip=" + v.Addr.String() + "," + v.MAC}, vm.UserParams...)
		}
	}
	// The VM as the backend gets it, complete (run directory, LANs, the
	// metadata share): checked once more before anything of it starts.
	if err := vm.Validate(); err != nil {
		return &Error{Reason: Failure, Err: fmt.Errorf("the VM as prepared: %w", err)}
	}
	if i.console, err = openConsole(cfg, i.out, i.msgs, &i.cl); err != nil {
		return &Error{Reason: Failure, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return &Error{Reason: Interrupted, Err: err}
	}
	_, stateErr := os.Lstat(cfg.State)
	newState := cfg.State != "" && errors.Is(stateErr, fs.ErrNotExist) // the backend makes it
	i.machine, err = i.backend.Start(ctx, vm, i.console.guest, i.msgs)
	i.console.started() // the backend holds the guest's ends now
	if _, err := os.Stat(cfg.State); newState && err == nil {
		i.msgs.always("sonix-run: created the state image %s (%d MiB, sparse); the guest formats it on first boot", cfg.State, cfg.StateSize>>20)
	}
	switch {
	case errors.Is(err, vmm.ErrRefused):
		return &Error{Reason: BadInput, Err: err} // nothing was started
	case err != nil && ctx.Err() != nil:
		return &Error{Reason: Interrupted, Err: ctx.Err()}
	case err != nil:
		return &Error{Reason: Failure, Err: err}
	}
	m := i.machine
	i.cl.push("the VM", 10*time.Second, func(ctx context.Context) error { return m.Stop(ctx) })
	if vm.Agent {
		if err := i.connectAgent(ctx); err != nil {
			return &Error{Reason: Failure, Err: err}
		}
	}
	if i.ctl, err = listenControl(i); err != nil {
		return &Error{Reason: Failure, Err: err}
	}
	i.cl.push("control socket", 5*time.Second, i.ctl.close)
	if vm.GDBPort != 0 { // now, when it is listening
		i.msgs.always("%s", gdbNotice(vm))
	}
	return nil
}

// Done is closed when the VM has ended and everything is cleaned up.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Wait waits until the VM has ended and everything is cleaned up, and says
// how it ended: nil for a clean poweroff.
func (i *Instance) Wait() error {
	<-i.done
	return i.err
}

// Name is the VM's name (`sonix-run exec NAME`).
func (i *Instance) Name() string { return i.vm.Name }

// Shutdown presses the guest's power button.
func (i *Instance) Shutdown(ctx context.Context) error { return i.machine.Shutdown(ctx) }

// Stop ends the VM at once, with why as the run's result, and waits.
func (i *Instance) Stop(why error) error {
	e, ok := why.(*Error)
	if !ok {
		e = &Error{Reason: Interrupted, Err: why}
	}
	i.requestStop(stopRequest{why: e})
	return i.Wait()
}

func (i *Instance) requestStop(r stopRequest) {
	select {
	case i.stopReq <- r:
	default: // a stop is already asked for
	}
}

// AddForward forwards a host port on 127.0.0.1 to the guest while it runs.
func (i *Instance) AddForward(ctx context.Context, f vmm.Forward) error {
	if !i.backend.Features().Forwards {
		return fmt.Errorf("forwarding %s: the %s backend does not support it", f, i.backend.Name())
	}
	return i.machine.AddForward(ctx, f)
}

// VM is the description the instance was booted from.
func (i *Instance) VM() *vmm.VM { return i.vm }

// Agent is the client of the guest's agent (the VM must have been started
// with Config.Agent or Config.Command).
func (i *Instance) Agent() (*agent.Client, error) {
	if i.agent == nil {
		return nil, fmt.Errorf("the VM was started without its agent's port (Config.Agent)")
	}
	return i.agent, nil
}

// Command returns the command line that reproduces this run, for messages.
func (i *Instance) Command() []string {
	if !i.backend.Features().CommandLine {
		return nil
	}
	procs, err := i.backend.Commands(i.vm)
	if err != nil || len(procs) == 0 {
		return nil
	}
	return procs[len(procs)-1].Argv
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
	return &Error{Reason: e.Reason, Signal: e.Signal, Status: e.Status, Err: fmt.Errorf("%w; cleaning up: %v", e.Err, teardownErr)}
}

// gdbNotice tells how to attach gdb to the stub.
func gdbNotice(vm *vmm.VM) string {
	held := ""
	if vm.GDBWait {
		held = " (CPUs stopped until gdb continues them)"
	}
	return fmt.Sprintf("sonix-run: gdb stub on 127.0.0.1:%d%s; attach with: gdb vmlinux -ex 'target remote 127.0.0.1:%d'", vm.GDBPort, held, vm.GDBPort)
}

// defaultNameBase is a VM name made from a system's store path.
func defaultNameBase(toplevel string) string {
	base := filepath.Base(toplevel)
	if i := strings.IndexByte(base, '-'); i == 32 {
		base = base[i+1:]
	}
	base = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, base)
	base = strings.TrimLeft(base, "-_.")
	if len(base) > 48 {
		base = base[:48]
	}
	if base == "" {
		base = "vm"
	}
	return base
}
