package vz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/vmm"
)

// vmState is what the machine needs to know of the framework's VM state.
type vmState int

const (
	stateOther   vmState = iota // starting, running, pausing, stopping, ...
	stateStopped                // VZVirtualMachineStateStopped
	stateError                  // VZVirtualMachineStateError
)

// vmControl is the part of *vz.VirtualMachine the machine drives; the darwin
// adapter passes the real one, tests a fake.
type vmControl interface {
	CanRequestStop() bool
	RequestStop() (bool, error)
	CanStop() bool
	Stop() error
}

// agentLink is the agent port as the machine sees it (agent_unix.go).
type agentLink interface {
	take() (io.ReadWriteCloser, error)
	end()
}

// errStateError is the Failed outcome's error: v3.7.1 exposes the
// framework's state but not the NSError of virtualMachine:didStopWithError:.
var errStateError = errors.New("Virtualization.framework stopped the VM with an error (the framework does not say which here; macOS's log may: `log show --last 5m --predicate 'subsystem == \"com.apple.Virtualization\"'`)")

// stopWait bounds how long Stop waits for the end when its context has no
// deadline of its own.
var stopWait = 10 * time.Second

// machine is a running VM: vmm.Machine on top of vmControl and the
// framework's state changes.
type machine struct {
	ctl     vmControl
	watcher *endingWatcher

	// console carries the guest's console output; finish ends it (bounded).
	console *consoleCopy
	// agent is the agent port, nil without VM.Agent.
	agent agentLink
	// release are closed after the console copy has ended: the duplicated
	// console files.
	release []io.Closer
	// keep holds what the framework uses by reference (the configuration,
	// its attachments, every *os.File whose descriptor it was handed: v3.7.1
	// does not duplicate descriptors) until the VM has ended.
	keep []any

	ending     chan struct{} // closed when finish begins
	done       chan struct{} // closed when finish has settled the outcome
	finishOnce sync.Once

	stopOnce     sync.Once
	stopReturned chan struct{} // closed when the framework's stop call returned

	mu      sync.Mutex
	stopped bool  // Stop was called before the end
	stopErr error // what the framework's stop call returned
	outcome vmm.Outcome
}

func newMachine(ctl vmControl) *machine {
	return &machine{
		ctl:          ctl,
		watcher:      &endingWatcher{},
		ending:       make(chan struct{}),
		done:         make(chan struct{}),
		stopReturned: make(chan struct{}),
	}
}

// watchStates is the one reader of the VM's state changes: it converts
// each with conv and returns once the VM has stopped or failed (or the
// channel ends) after finishing the machine, or once something else has
// finished it (a stop the framework confirmed).
func watchStates[S any](m *machine, states <-chan S, conv func(S) vmState) {
	for {
		select {
		case s, ok := <-states:
			if !ok {
				m.finish(errors.New("lost track of the VM's state: the framework's state channel closed"))
				return
			}
			switch conv(s) {
			case stateStopped:
				m.finish(nil)
				return
			case stateError:
				m.finish(errStateError)
				return
			}
		case <-m.ending:
			return
		}
	}
}

// finish ends the console copy and the agent port, releases the VM's
// files, settles the outcome and closes done; only the first call does. Every
// wait in it is bounded (consoleCopy.end), so Done closes even if the
// framework's VM service keeps a copy of a descriptor it was given.
func (m *machine) finish(err error) {
	m.finishOnce.Do(func() {
		close(m.ending)
		if m.console != nil {
			m.console.end()
		}
		if m.agent != nil {
			m.agent.end()
		}
		for _, c := range m.release {
			c.Close()
		}
		m.mu.Lock()
		m.outcome = classify(err, m.stopped, m.watcher.Ending())
		m.mu.Unlock()
		runtime.KeepAlive(m.keep)
		close(m.done)
	})
}

// classify says how the VM ended from the framework's error (nil for the
// stopped state), whether the host stopped it, and the console's last
// words. The console goes first where it is more precise than the
// framework: a kernel that said it panicked, or that it is restarting,
// ended that way even if the framework then reported an error (a reset the
// framework does not carry out, such as an x86 triple fault, may end in the
// error state). A poweroff line does not excuse an error: exit 0 must mean
// that everything worked.
func classify(frameworkErr error, hostStopped bool, console vmm.Ending) vmm.Outcome {
	switch {
	case console == vmm.Panicked:
		return vmm.Outcome{Ending: vmm.Panicked}
	case frameworkErr != nil && console == vmm.Reset:
		return vmm.Outcome{Ending: vmm.Reset}
	case frameworkErr != nil:
		return vmm.Outcome{Ending: vmm.Failed, Err: frameworkErr}
	case hostStopped:
		return vmm.Outcome{Ending: vmm.Stopped}
	case console == 0:
		return vmm.Outcome{Ending: vmm.PoweredOff}
	}
	return vmm.Outcome{Ending: console}
}

func (m *machine) Done() <-chan struct{} { return m.done }

func (m *machine) Outcome() vmm.Outcome {
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.outcome
}

// Shutdown presses the power button: the framework's requestStop, which the
// guest sees as a power key event (systemd-logind powers off; an arm64
// kernel needs CONFIG_KEYBOARD_GPIO for it).
func (m *machine) Shutdown(ctx context.Context) error {
	select {
	case <-m.ending:
		return nil
	default:
	}
	if !m.ctl.CanRequestStop() {
		return errors.New("the VM cannot take a stop request in its current state")
	}
	ok, err := m.ctl.RequestStop()
	if err != nil {
		return fmt.Errorf("requesting a stop: %w", err)
	}
	if !ok {
		return errors.New("Virtualization.framework did not deliver the stop request")
	}
	return nil
}

// AgentConn returns the host's end of the agent port (VM.Agent), once. The
// guest sees nothing of what is written before it opens the port: Linux
// discards data that reaches a virtio serial port nobody has open, and
// whether the framework holds it back until the guest opens the port (as
// QEMU does) is not documented, so the protocol must let the guest speak
// first.
func (m *machine) AgentConn(ctx context.Context) (io.ReadWriteCloser, error) {
	if m.agent == nil {
		return nil, errors.New("the VM has no agent port (it was started without VM.Agent)")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return m.agent.take()
}

// AddForward is refused: the framework's NAT forwards no ports
// (Features.Forwards is false).
// AgentPort: the framework does not say when the guest opens or closes a
// console port; the agent link's keepalive notices an agent that stopped.
func (m *machine) AgentPort() <-chan vmm.PortState { return nil }

func (m *machine) AddForward(ctx context.Context, f vmm.Forward) error {
	return fmt.Errorf("forwarding %s: the vz backend's NAT network does not forward ports", f)
}

// Stop pulls the plug and waits until the VM has ended, or until ctx ends
// or stopWait passes. It is a no-op once the VM has ended. The framework's
// stop call runs in a goroutine of its own, started once: v3.7.1 waits for
// its completion handler without a bound, and Stop must still honour ctx.
// When that call reports success the VM has stopped, and the machine
// finishes without waiting for the state change as well.
func (m *machine) Stop(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		go m.hardStop()
	})
	// A stop that races the guest's own poweroff fails; the end comes
	// anyway, so the failure is reported only if the end does not come.
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the VM has not stopped: %w", ctx.Err())
	case <-t.C:
		m.mu.Lock()
		err := m.stopErr
		m.mu.Unlock()
		if err != nil {
			return err
		}
		return fmt.Errorf("the VM did not stop within %v", stopWait)
	}
}

// hardStop makes the framework's stop call. It is the one goroutine of the
// machine whose end cannot be bounded: it ends when the framework answers.
func (m *machine) hardStop() {
	defer close(m.stopReturned)
	var err error
	if !m.ctl.CanStop() {
		err = errors.New("the VM cannot be stopped in its current state")
	} else if err = m.ctl.Stop(); err != nil {
		err = fmt.Errorf("stopping the VM: %w", err)
	}
	m.mu.Lock()
	m.stopErr = err
	m.mu.Unlock()
	if err == nil {
		m.finish(nil)
	}
}
