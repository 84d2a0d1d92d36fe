package qemu

import (
	"context"
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
	"github.com/sonix-run/sonix-run/launcher"
)

func init() { launcher.RegisterBackend(Backend{}) }

// Backend runs VMs under QEMU.
type Backend struct{}

func (Backend) Name() string        { return "qemu" }
func (Backend) UsesVirtiofsd() bool { return true }

// qemuPath finds the emulator for vm's architecture on $PATH.
func qemuPath(vm *launcher.VM) (string, error) {
	name, err := Binary(vm.Arch)
	if err != nil {
		return "", err
	}
	p, err := exec.LookPath(name)
	if err != nil {
		pkg := map[launcher.Arch]string{launcher.X86_64: "qemu-system-x86", launcher.AArch64: "qemu-system-arm"}[vm.Arch]
		return "", fmt.Errorf("%s not found on $PATH: install QEMU (Debian/Ubuntu: `apt install %s`, Nix: `nixpkgs#qemu`)", name, pkg)
	}
	return p, nil
}

func (Backend) Resolve(ctx context.Context, vm *launcher.VM, dryRun bool, log io.Writer) error {
	if vm.Rosetta {
		return fmt.Errorf("--rosetta needs the vz backend (macOS on Apple silicon)")
	}
	p, err := qemuPath(vm)
	if err != nil {
		return err
	}
	return resolveAccel(ctx, vm, p, dryRun, log)
}

func (Backend) Command(vm *launcher.VM) ([]string, error) {
	p, err := qemuPath(vm)
	if err != nil {
		return nil, err
	}
	return Argv(vm, p)
}

// Start starts QEMU and connects to its QMP socket.
func (b Backend) Start(ctx context.Context, vm *launcher.VM, console launcher.Console, log io.Writer) (launcher.Machine, error) {
	argv, err := b.Command(vm)
	if err != nil {
		return nil, err
	}
	m := &machine{vm: vm, stderr: proc.NewTail(4096), exited: make(chan struct{}), done: make(chan struct{})}
	m.cmd = exec.Command(argv[0], argv[1:]...)
	m.cmd.Stdin, m.cmd.Stdout = console.In, console.Out
	m.cmd.Stderr = m.stderr
	if log != nil {
		m.cmd.Stderr = io.MultiWriter(m.stderr, log)
	}
	if err := proc.Start(m.cmd); err != nil {
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
		if errors.Is(err, sockwait.ErrExited) {
			return nil, m.failure()
		}
		return nil, fmt.Errorf("connecting to QEMU's QMP socket: %v; %w", err, m.failure())
	}
	go func() {
		<-m.exited
		m.mon.close() // returns once every event QEMU sent has been drained
		close(m.done)
	}()
	return m, nil
}

type machine struct {
	vm      *launcher.VM
	cmd     *exec.Cmd
	stderr  *proc.Tail
	mon     *monitor
	exited  chan struct{} // the process has ended; waitErr is set
	waitErr error
	done    chan struct{} // exited, and the last events are in

	stopOnce sync.Once
	stopping bool // Stop was called: a host-side end is expected
	mu       sync.Mutex
}

func (m *machine) Done() <-chan struct{} { return m.done }

// PortMark returns a position in the event stream for WaitPortOpen.
func (m *machine) PortMark() int {
	events, _, _ := m.mon.snapshot()
	return len(events)
}

// WaitPortOpen waits for the guest to open the named port after mark, as
// told by QEMU's VSERPORT_CHANGE events.
func (m *machine) WaitPortOpen(ctx context.Context, name string, mark int) error {
	id := ""
	for i, n := range m.vm.Ports {
		if n == name {
			id = fmt.Sprintf("port%d-dev", i)
		}
	}
	for {
		events, closed, changed := m.mon.snapshot()
		for _, e := range events[min(mark, len(events)):] {
			if e.Event == "VSERPORT_CHANGE" && e.Data["id"] == id && e.Data["open"] == true {
				return nil
			}
		}
		if closed {
			return fmt.Errorf("QEMU exited before the guest opened %s", name)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// DialPort connects to a named virtio console port's socket. QEMU creates
// it before QMP answers, so it is there; a port that the host closes and
// dials again is seen by the guest as a hangup and a new connection.
func (m *machine) DialPort(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	for i, n := range m.vm.Ports {
		if n == name {
			var d net.Dialer
			return d.DialContext(ctx, "unix", PortSocket(m.vm, i))
		}
	}
	return nil, fmt.Errorf("the VM has no port %q", name)
}

func (m *machine) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := m.mon.run(ctx, "system_powerdown", nil)
	return err
}

// Stop asks QEMU to quit, then kills it if it does not.
func (m *machine) Stop() error {
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopping = true
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m.mon.run(ctx, "quit", nil) // errors are expected: QEMU may be gone
		select {
		case <-m.exited:
		case <-time.After(3 * time.Second):
			m.kill()
		}
	})
	<-m.done
	return nil
}

func (m *machine) kill() { m.cmd.Process.Signal(syscall.SIGKILL) }

// Outcome reads how the VM ended from QMP events, not from console text:
// GUEST_PANICKED for a panic, SHUTDOWN's reason for the rest.
func (m *machine) Outcome() launcher.Outcome {
	<-m.done
	events, _, _ := m.mon.snapshot()
	reason := ""
	for _, e := range events {
		switch e.Event {
		case "GUEST_PANICKED":
			return launcher.Outcome{Ending: launcher.Panicked}
		case "SHUTDOWN":
			if reason == "" {
				reason, _ = e.Data["reason"].(string)
			}
		}
	}
	switch reason {
	case "guest-shutdown":
		return launcher.Outcome{Ending: launcher.PoweredOff}
	case "guest-reset":
		return launcher.Outcome{Ending: launcher.Reset}
	case "guest-panic":
		return launcher.Outcome{Ending: launcher.Panicked}
	}
	m.mu.Lock()
	stopping := m.stopping
	m.mu.Unlock()
	if stopping {
		return launcher.Outcome{Ending: launcher.Stopped}
	}
	return launcher.Outcome{Ending: launcher.Failed, Err: m.failure()}
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
