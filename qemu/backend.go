package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
	"github.com/sonix-run/sonix-run/internal/sockwait"
	"github.com/sonix-run/sonix-run/virtiofs"
	"github.com/sonix-run/sonix-run/vmm"
)

func init() { vmm.Register(Backend{}) }

// Backend runs VMs under QEMU.
type Backend struct{}

func (Backend) Name() string { return "qemu" }

// Features: QEMU does everything sonix-run offers except Rosetta.
func (Backend) Features() vmm.Features {
	return vmm.Features{CommandLine: true, GDB: true, Forwards: true,
		Disks: true, Agent: true, RawQEMUArgs: true, NetNone: true, NetRestricted: true, VLAN: true, Dump: true}
}

// qemuPath finds the emulator for vm's architecture on $PATH.
func qemuPath(vm *vmm.VM) (string, error) {
	name, err := Binary(vm.Arch)
	if err != nil {
		return "", err
	}
	p, err := exec.LookPath(name)
	if err != nil {
		pkg := map[vmm.Arch]string{vmm.X86_64: "qemu-system-x86", vmm.AArch64: "qemu-system-arm"}[vm.Arch]
		return "", fmt.Errorf("%s not found on $PATH: install QEMU (Debian/Ubuntu: `apt install %s`, Nix: `nixpkgs#qemu`)", name, pkg)
	}
	return p, nil
}

func (Backend) Resolve(ctx context.Context, vm *vmm.VM, mode vmm.Mode, log vmm.Log) error {
	if vm.CPUs > maxCPUs[vm.Arch] {
		return fmt.Errorf("--cpus %d: QEMU's %s machine takes at most %d", vm.CPUs, boards[vm.Arch].machine, maxCPUs[vm.Arch])
	}
	p, err := qemuPath(vm)
	if err != nil {
		return err
	}
	// The shares' daemons: one that cannot serve a share as asked is a
	// refusal, found before the slower steps.
	if _, err := findDaemon(ctx, vm); err != nil {
		return err
	}
	if err := resolveAccel(ctx, vm, p, mode == vmm.DryRun, log); err != nil {
		return err
	}
	if err := resolveKernel(ctx, vm, mode, log); err != nil {
		return err
	}
	resolveFirmware(vm, p, log)
	return nil
}

// Commands is what runs vm: a virtiofsd per share, then QEMU.
func (Backend) Commands(vm *vmm.VM) ([]vmm.Process, error) {
	p, err := qemuPath(vm)
	if err != nil {
		return nil, err
	}
	argv, err := Argv(vm, p)
	if err != nil {
		return nil, err
	}
	shares, err := shareProcesses(context.Background(), vm)
	if err != nil {
		return nil, err
	}
	return append(append(diskProcesses(vm), shares...), vmm.Process{Argv: argv}), nil
}

// Start starts the shares' daemons, then QEMU, and connects to its QMP
// socket.
func (b Backend) Start(ctx context.Context, vm *vmm.VM, console vmm.Console, log vmm.Log) (vmm.Machine, error) {
	p, err := qemuPath(vm)
	if err != nil {
		return nil, err
	}
	argv, err := Argv(vm, p)
	if err != nil {
		return nil, err
	}
	if err := createDisks(ctx, vm); err != nil {
		return nil, err
	}
	m := &machine{vm: vm, stderr: proc.NewTail(4096), exited: make(chan struct{}), done: make(chan struct{})}
	if m.fsd, err = startShares(ctx, vm, log); err != nil {
		return nil, err
	}
	m.cmd = exec.Command(argv[0], argv[1:]...)
	m.cmd.Stdin, m.cmd.Stdout = console.In, console.Out
	m.cmd.Stderr = m.stderr
	if log != nil {
		if out := log.Output(""); out != nil {
			m.cmd.Stderr = io.MultiWriter(m.stderr, out)
		}
	}
	if err := proc.Start(m.cmd); err != nil {
		m.fsd.Stop(0)
		return nil, fmt.Errorf("starting QEMU: %w", err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	// QEMU creates the QMP socket during startup, before the guest runs.
	err = sockwait.Listening(ctx, QMPSocket(vm), m.exited)
	if err == nil {
		m.mon, err = dialMonitor(ctx, QMPSocket(vm))
	}
	if err != nil {
		m.kill()
		<-m.exited
		// A virtiofsd that died under QEMU's handshake is often the cause.
		daemons := m.fsd.ExitErrors()
		m.fsd.Stop(0)
		if errors.Is(err, sockwait.ErrExited) {
			return nil, errors.Join(append([]error{m.failure()}, daemons...)...)
		}
		return nil, errors.Join(append([]error{fmt.Errorf("connecting to QEMU's QMP socket: %v; %w", err, m.failure())}, daemons...)...)
	}
	if m.fsd != nil {
		go m.watchShares() // ends when QEMU has exited
	}
	go m.watchInternalError() // ends when QEMU has exited
	if vm.DumpPath != "" {
		m.dumped = make(chan struct{})
		go m.dumpOnPanic() // ends by the time QEMU has exited
	}
	go func() {
		<-m.exited
		m.mon.close() // returns once every event QEMU sent has been drained
		if m.dumped != nil {
			<-m.dumped
		}
		// The daemons exit by themselves once QEMU has disconnected them.
		m.fsdStopErr = m.fsd.Stop(fsdStopGrace)
		close(m.done)
	}()
	return m, nil
}

type machine struct {
	vm      *vmm.VM
	cmd     *exec.Cmd
	stderr  *proc.Tail
	mon     *monitor
	exited  chan struct{} // the process has ended; waitErr is set
	waitErr error
	done    chan struct{} // exited, and the last events are in

	stopOnce sync.Once
	stopping bool // Stop was called: a host-side end is expected
	mu       sync.Mutex

	dumped  chan struct{} // with --dump: closed when dumpOnPanic has ended
	dumpErr error

	portOnce sync.Once
	portCh   chan vmm.PortState // AgentPort's

	stuckErr   error           // the VM stopped on an internal error (under mu)
	fsd        *virtiofs.Group // the shares' daemons; nil for none
	fsdErr     error           // a daemon that ended under a running VM (under mu)
	fsdStopErr error           // stopping the daemons after QEMU (set before done)
}

// dumpTimeout bounds writing a panicked guest's memory (about 1 GB/s).
const dumpTimeout = 5 * time.Minute

// dumpOnPanic waits for the guest to panic (QEMU pauses it: panic=pause),
// writes its memory to vm.DumpPath as an ELF vmcore, then ends QEMU.
func (m *machine) dumpOnPanic() {
	defer close(m.dumped)
	for {
		events, closed, changed := m.mon.snapshot()
		for _, e := range events {
			if e.Event != "GUEST_PANICKED" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), dumpTimeout)
			_, err := m.mon.run(ctx, "dump-guest-memory", map[string]any{
				"paging": false, "protocol": "file:" + m.vm.DumpPath, "format": "elf"})
			cancel()
			m.mu.Lock()
			m.dumpErr = err
			m.mu.Unlock()
			qctx, qcancel := context.WithTimeout(context.Background(), quitGrace)
			m.mon.run(qctx, "quit", nil)
			qcancel()
			return
		}
		if closed {
			return
		}
		<-changed
	}
}

// watchInternalError ends QEMU when the VM stops on an internal error
// (QEMU pauses a guest that KVM failed to run, e.g. an instruction it
// could not emulate, and waits for ever): the run fails at once, saying
// why, instead of hanging until --timeout.
func (m *machine) watchInternalError() {
	seen := 0
	for {
		stops, closed, changed := m.mon.stopped()
		if closed {
			return
		}
		if stops != seen {
			seen = stops
			ctx, cancel := context.WithTimeout(context.Background(), qmpTimeout)
			out, err := m.mon.run(ctx, "query-status", nil)
			cancel()
			var reply struct {
				Return struct {
					Status string `json:"status"`
				} `json:"return"`
			}
			if err == nil && json.Unmarshal(out, &reply) == nil && reply.Return.Status == "internal-error" {
				m.mu.Lock()
				m.stuckErr = internalError(m.vm.Accel, m.stderr.String())
				m.mu.Unlock()
				m.kill()
				return
			}
		}
		<-changed
	}
}

// internalError says that the guest stopped on an internal error of the
// accelerator, quoting QEMU's first line about it (the register dump that
// follows it says little to a user).
func internalError(accel vmm.Accel, stderr string) error {
	what := "an internal error"
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "internal error") {
			what = strings.TrimSpace(line)
			break
		}
	}
	msg := fmt.Sprintf("QEMU stopped the guest: %s", what)
	if strings.Contains(stderr, "emulation failure") {
		msg += " (emulation failure)"
	}
	if accel == vmm.AccelKVM {
		msg += "; KVM on this host cannot run this guest: --accel tcg runs it emulated"
	}
	return errors.New(msg)
}

// dumpError says why a --dump could not be written (nil: written, or no
// dump asked for); called once the machine is done.
func (m *machine) dumpError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dumpErr
}

func (m *machine) Done() <-chan struct{} { return m.done }

// agentPortID is the agent port's device id on QEMU's command line (Argv).
const agentPortID = "agent-dev"

// AgentPort reports the guest opening and closing the agent's port, from
// QEMU's VSERPORT_CHANGE events: a closed port is an agent that stopped.
// The channel holds the latest state only and is closed when QEMU has
// exited.
func (m *machine) AgentPort() <-chan vmm.PortState {
	if !m.vm.Agent {
		return nil
	}
	m.portOnce.Do(func() {
		m.portCh = make(chan vmm.PortState, 1)
		go func() { // owned: ends when the monitor does, with QEMU
			defer close(m.portCh)
			var last vmm.PortState
			for {
				state, closed, changed := m.mon.port(agentPortID)
				if state != last {
					last = state
					select { // latest wins
					case <-m.portCh:
					default:
					}
					m.portCh <- state
				}
				if closed {
					return
				}
				<-changed
			}
		}()
	})
	return m.portCh
}

// AgentConn connects to the agent port's socket. QEMU creates it before QMP
// answers, so it is there; QEMU reads nothing from it until the guest opens
// the port, so what the host sends first waits in the socket.
func (m *machine) AgentConn(ctx context.Context) (io.ReadWriteCloser, error) {
	if !m.vm.Agent {
		return nil, fmt.Errorf("the VM has no agent port")
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", AgentSocket(m.vm))
}

// AddForward adds a host port forward to the user network while the VM
// runs (HMP's hostfwd_add: QMP has no command of its own for it).
func (m *machine) AddForward(ctx context.Context, f vmm.Forward) error {
	if !m.vm.Network.NAT() {
		return fmt.Errorf("forwarding %s needs --net user or restricted", f)
	}
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	rule := fmt.Sprintf("hostfwd_add net0 %s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort)
	out, err := m.mon.run(ctx, "human-monitor-command", map[string]string{"command-line": rule})
	if err != nil {
		return err
	}
	// HMP reports failure as text in a successful reply.
	var reply struct {
		Return string `json:"return"`
	}
	if json.Unmarshal(out, &reply) == nil && strings.TrimSpace(reply.Return) != "" {
		return fmt.Errorf("forwarding %s: %s", f, strings.TrimSpace(reply.Return))
	}
	return nil
}

func (m *machine) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	_, err := m.mon.run(ctx, "system_powerdown", nil)
	return err
}

// Stop asks QEMU to quit, then kills it if it has not exited within
// quitGrace. It returns once QEMU has exited and its last events are in, or
// when ctx ends first.
func (m *machine) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopping = true
		m.mu.Unlock()
		go func() { // owned: it ends when QEMU has exited, which the kill guarantees
			qctx, cancel := context.WithTimeout(context.Background(), quitGrace)
			defer cancel()
			m.mon.run(qctx, "quit", nil) // errors are expected: QEMU may be gone
			t := time.NewTimer(quitGrace)
			defer t.Stop()
			select {
			case <-m.exited:
			case <-t.C:
				m.kill()
			}
		}()
	})
	select {
	case <-m.done:
		if m.fsdStopErr != nil {
			return fmt.Errorf("stopping virtiofsd: %w", m.fsdStopErr)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("QEMU (pid %d) has not exited after being stopped: %w", m.cmd.Process.Pid, ctx.Err())
	}
}

// quitGrace is how long QEMU may take to quit when asked before it is killed.
const quitGrace = 2 * time.Second

func (m *machine) kill() { m.cmd.Process.Signal(syscall.SIGKILL) }

// qmpTimeout bounds a QMP command: QEMU answers at once unless it is wedged.
const qmpTimeout = 5 * time.Second

// maxCPUs is what QEMU 7.2's machines accept.
var maxCPUs = map[vmm.Arch]int{vmm.X86_64: 255, vmm.AArch64: 255}

// Outcome reads how the VM ended from QMP events, not from console text:
// GUEST_PANICKED for a panic, SHUTDOWN's reason for the rest.
func (m *machine) Outcome() vmm.Outcome {
	<-m.done
	events, _, _ := m.mon.snapshot()
	reason := ""
	for _, e := range events {
		switch e.Event {
		case "GUEST_PANICKED":
			return vmm.Outcome{Ending: vmm.Panicked, DumpErr: m.dumpError()}
		case "SHUTDOWN":
			if reason == "" {
				reason, _ = e.Data["reason"].(string)
			}
		}
	}
	switch reason {
	case "guest-shutdown":
		return vmm.Outcome{Ending: vmm.PoweredOff}
	case "guest-reset":
		return vmm.Outcome{Ending: vmm.Reset}
	case "guest-panic":
		return vmm.Outcome{Ending: vmm.Panicked, DumpErr: m.dumpError()}
	}
	m.mu.Lock()
	stopping, fsdErr, stuckErr := m.stopping, m.fsdErr, m.stuckErr
	m.mu.Unlock()
	switch {
	case stuckErr != nil:
		return vmm.Outcome{Ending: vmm.Failed, Err: stuckErr}
	case fsdErr != nil:
		return vmm.Outcome{Ending: vmm.Failed, Err: fsdErr}
	case stopping:
		return vmm.Outcome{Ending: vmm.Stopped}
	}
	return vmm.Outcome{Ending: vmm.Failed, Err: m.failure()}
}

// failure describes an unexpected exit of QEMU with the tail of its stderr.
func (m *machine) failure() error {
	status := "exited without reporting a guest shutdown"
	if m.waitErr != nil {
		status = m.waitErr.Error()
	}
	msg := "QEMU " + status
	if tail := strings.TrimSpace(m.stderr.String()); tail != "" {
		msg += ":\n    " + strings.ReplaceAll(tail, "\n", "\n    ")
	}
	return errors.New(msg)
}
