package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/wire"
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/shell"
	"github.com/sonix-run/sonix-run/launcher"
	_ "github.com/sonix-run/sonix-run/qemu" // the backends a test may boot with
	_ "github.com/sonix-run/sonix-run/vz"
)

// DefaultTimeout bounds each Must call (and MustRun, MustWaitFor) of a VM,
// unless the VM is used through WithTimeout.
const DefaultTimeout = 5 * time.Minute

// VM is a booted guest. Its methods are safe for concurrent use.
type VM struct {
	m           *machine
	timeout     time.Duration // for Must calls; 0 is DefaultTimeout
	outputLimit int64         // for Run and Exec; 0 is DefaultOutputLimit
}

// machine is what every view of one VM (WithTimeout) shares.
type machine struct {
	inst    *launcher.Instance
	cfg     config.Config // as started, Name included
	console *console
	agent   *agent.Client
	log     *commandLog

	helloMu sync.Mutex
	hello   *wire.Hello

	closeOnce sync.Once
	closeErr  error
}

// Result is how a command ended.
type Result struct {
	Status int
	Stdout []byte
	Stderr []byte
}

// Start boots the system cfg names. ctx bounds the whole life of the VM:
// when it ends, the VM is stopped. The agent's port is always added;
// cfg.Stdout, if set, also gets the console. Without cfg.Name the VM gets
// a name unique to this process and call.
func Start(ctx context.Context, cfg config.Config) (*VM, error) {
	if cfg.Name == "" {
		cfg.Name = uniqueVMName("vm")
	}
	c := newConsole(cfg.Stdout)
	vm, err := start(ctx, cfg, c)
	if err != nil {
		c.release()
	}
	return vm, err
}

func start(ctx context.Context, cfg config.Config, c *console) (*VM, error) {
	cfg.Stdout = c
	cfg.Agent = true
	cfg.Stdin = nil
	cfg.Command = nil
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	inst, err := launcher.Start(ctx, cfg)
	if err != nil {
		c.end()
		return nil, err
	}
	cfg.Name = inst.Name()
	vm := &VM{m: &machine{inst: inst, cfg: cfg, console: c, log: newCommandLog(c.begin)}}
	go func() { // ends with the VM
		<-inst.Done()
		c.end()
	}()
	if vm.m.agent, err = inst.Agent(); err != nil {
		vm.Close()
		return nil, err
	}
	return vm, nil
}

// WithTimeout returns the same VM whose Must calls are bounded by d
// instead of DefaultTimeout:
//
//	vm.WithTimeout(10*time.Second).MustWaitForOpenPort(t, 80)
func (vm *VM) WithTimeout(d time.Duration) *VM {
	v := *vm
	v.timeout = d
	return &v
}

// DefaultOutputLimit bounds how much of each of a command's stdout and
// stderr Run and Exec (and every call built on them) keep, unless the VM
// is used through WithOutputLimit. Stream has no bound: its writers are
// the caller's.
const DefaultOutputLimit = 16 << 20

// WithOutputLimit returns the same VM whose Run and Exec (and the calls
// built on them) keep up to n bytes of each stream instead of
// DefaultOutputLimit (n <= 0: the default):
//
//	vm.WithOutputLimit(1<<30).MustSucceed(t, "cat /var/log/big")
func (vm *VM) WithOutputLimit(n int64) *VM {
	v := *vm
	v.outputLimit = n
	return &v
}

func (vm *VM) limit() int64 {
	if vm.outputLimit <= 0 {
		return DefaultOutputLimit
	}
	return vm.outputLimit
}

// Name is the VM's name: `sonix-run exec NAME` and `sonix-run shell NAME`
// reach it while it runs.
func (vm *VM) Name() string { return vm.m.inst.Name() }

// WaitFor waits until a console line matches re and returns it (lines seen
// since the start count too, as far as the console keeps them: its last
// 10000 lines, at most 4 MiB; each line is returned at most once; a line
// longer than 64 KiB is matched in pieces of 64 KiB). WaitForConsole is
// the same call.
func (vm *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	line, err := vm.m.console.waitFor(ctx, re)
	if err != nil {
		return "", vm.newError(fmt.Sprintf("wait for console %q", re), nil, err)
	}
	return line, nil
}

// Run runs cmd in the guest (sh -c, as root) and returns its status and
// output; a non-zero status is a result, not an error. Each of stdout and
// stderr is kept up to the VM's output limit (DefaultOutputLimit, or
// WithOutputLimit): a command that prints more is ended, and Run returns
// what it kept, the command's status and an *OutputLimitError.
func (vm *VM) Run(ctx context.Context, cmd string) (Result, error) {
	return vm.exec(ctx, agent.Command{Shell: cmd})
}

// Exec runs argv in the guest (no shell, as root) and returns its status
// and output, bounded as Run's.
func (vm *VM) Exec(ctx context.Context, argv ...string) (Result, error) {
	return vm.exec(ctx, agent.Command{Argv: argv})
}

func (vm *VM) exec(ctx context.Context, cmd agent.Command) (Result, error) {
	out := &capture{stream: "stdout", limit: vm.limit()}
	errb := &capture{stream: "stderr", limit: vm.limit()}
	st, err := vm.Stream(ctx, cmd, nil, out, errb)
	// Stream has returned: nothing writes to the buffers any more.
	return Result{Status: st, Stdout: out.buf.Bytes(), Stderr: errb.buf.Bytes()}, err
}

// OutputLimitError is the error of a Run or Exec whose command printed
// more than the VM's output limit on one stream: the harness ended the
// command, and the Result holds the first Limit bytes of that stream.
type OutputLimitError struct {
	Stream   string // "stdout" or "stderr"
	Limit    int64
	Received int64 // the bytes of Stream that had come when the limit was passed
	Status   int   // the command's exit status; -1 if none came
}

func (e *OutputLimitError) Error() string {
	status := "no exit status came"
	if e.Status >= 0 {
		status = fmt.Sprintf("exit status %d", e.Status)
	}
	return fmt.Sprintf("its %s passed the output limit of %s: it printed at least %d bytes there, so the harness ended it (%s); "+
		"the result holds the first %d bytes. Raise the limit with vm.WithOutputLimit(n), or stream the output to writers of your own with Stream",
		e.Stream, byteSize(e.Limit), e.Received, status, e.Limit)
}

// byteSize says n in MiB or KiB where that is exact.
func byteSize(n int64) string {
	switch {
	case n > 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n > 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// capture keeps a command's stream up to limit; the write that passes it
// fails with an *OutputLimitError, which makes the agent end the command.
type capture struct {
	stream string
	limit  int64
	buf    bytes.Buffer
	n      int64 // bytes that came
}

func (c *capture) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	room := c.limit - int64(c.buf.Len())
	if int64(len(p)) <= room {
		return c.buf.Write(p)
	}
	room = max(room, 0)
	c.buf.Write(p[:room])
	return int(room), &OutputLimitError{Stream: c.stream, Limit: c.limit, Received: c.n, Status: -1}
}

// Stream runs cmd with stdin (nil for none), streaming its output live.
// The command, its status and (the end of) its output go to the VM's
// command log.
func (vm *VM) Stream(ctx context.Context, cmd agent.Command, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	e := vm.m.log.start("exec", describe(cmd))
	st, err := vm.m.agent.Exec(ctx, cmd, agent.Stdio{Stdin: stdin, Stdout: e.stdout(stdout), Stderr: e.stderr(stderr)})
	var limit *OutputLimitError
	if errors.As(err, &limit) {
		// Ended by the harness, for its output: no VM's end to wait for.
		limit.Status = st
		err = fmt.Errorf("running %s: %w", describe(cmd), limit)
	} else if err != nil {
		// The agent's port closing usually means the VM is ending (a
		// panic, a poweroff): give it a moment to say how.
		var g *agent.GuestError
		wait := vmEndWait
		if ctx.Err() != nil || errors.As(err, &g) {
			wait = 0
		}
		if vm.ended(wait) {
			if werr := vm.m.inst.Wait(); werr != nil {
				err = fmt.Errorf("running %s: %w (the VM ended: %v)", describe(cmd), err, werr)
			} else {
				err = fmt.Errorf("running %s: %w (the VM ended)", describe(cmd), err)
			}
		} else {
			err = fmt.Errorf("running %s: %w", describe(cmd), err)
		}
	}
	e.finish(st, err)
	return st, err
}

// ended says whether the VM has ended, waiting for that up to wait.
func (vm *VM) ended(wait time.Duration) bool {
	select {
	case <-vm.m.inst.Done():
		return true
	default:
	}
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-vm.m.inst.Done():
		return true
	case <-t.C:
		return false
	}
}

// vmEndWait bounds how long a command that failed waits for the VM's end,
// to report it.
const vmEndWait = 2 * time.Second

func describe(cmd agent.Command) string {
	if cmd.Shell != "" {
		return fmt.Sprintf("%q", cmd.Shell)
	}
	return fmt.Sprintf("%q", cmd.Argv)
}

// CopyTo copies a host file or directory into the guest (modes kept).
func (vm *VM) CopyTo(ctx context.Context, hostSrc, guestDst string) error {
	return vm.copy(fmt.Sprintf("host %q to guest %q", hostSrc, guestDst), func() error {
		return vm.m.agent.CopyTo(ctx, hostSrc, guestDst)
	})
}

// CopyFrom copies a guest file or directory to the host (modes kept).
func (vm *VM) CopyFrom(ctx context.Context, guestSrc, hostDst string) error {
	return vm.copy(fmt.Sprintf("guest %q to host %q", guestSrc, hostDst), func() error {
		return vm.m.agent.CopyFrom(ctx, guestSrc, hostDst)
	})
}

// copy runs a copy, logging it for the artifacts.
func (vm *VM) copy(what string, do func() error) error {
	e := vm.m.log.start("copy", what)
	err := do()
	e.finish(0, err)
	if err != nil {
		return vm.newError("copy "+what, nil, err)
	}
	return nil
}

// Shutdown powers the guest off gracefully: through its agent, else by the
// ACPI power button; when ctx ends first, the VM is stopped. It returns how
// the VM ended (nil for a clean poweroff).
func (vm *VM) Shutdown(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := vm.m.agent.PowerOff(pctx)
	cancel()
	if err != nil {
		vm.m.inst.Shutdown(ctx)
	}
	select {
	case <-vm.m.inst.Done():
		return vm.m.inst.Wait()
	case <-ctx.Done():
		return vm.m.inst.Stop(fmt.Errorf("shutdown: %w", ctx.Err()))
	}
}

// Close stops the VM if it still runs and cleans everything up; it is safe
// to call more than once and after Shutdown.
func (vm *VM) Close() error {
	m := vm.m
	m.closeOnce.Do(func() {
		select {
		case <-m.inst.Done():
			m.closeErr = m.inst.Wait()
		default:
			m.closeErr = m.inst.Stop(errClosed)
		}
		if errors.Is(m.closeErr, errClosed) {
			m.closeErr = nil // stopped because we asked
		}
	})
	return m.closeErr
}

var errClosed = errors.New("closed")

// Command is the hypervisor's command line for this VM (its sockets live
// in the run's directory, so it documents rather than reproduces; see
// Reproduce).
func (vm *VM) Command() string { return shell.Join(vm.m.inst.Command()) }

// Reproduce is the sonix-run command line that boots the same VM, with the
// same name, LANs and kernel parameters.
func (vm *VM) Reproduce() string { return reproduceLine(vm.m.cfg) }

// agentHello asks the agent who it is, once per VM.
func (vm *VM) agentHello(ctx context.Context) (wire.Hello, error) {
	m := vm.m
	m.helloMu.Lock()
	defer m.helloMu.Unlock()
	if m.hello != nil {
		return *m.hello, nil
	}
	h, err := m.agent.Hello(ctx)
	if err != nil {
		return h, err
	}
	m.hello = &h
	return h, nil
}
