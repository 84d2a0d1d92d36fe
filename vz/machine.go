package vz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/launcher"
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

// errStateError is the Failed outcome's error: v3.7.1 exposes the
// framework's state but not the NSError of virtualMachine:didStopWithError:.
var errStateError = errors.New("Virtualization.framework stopped the VM with an error (the framework does not say which here; macOS's log may: `log show --last 5m --predicate 'subsystem == \"com.apple.Virtualization\"'`)")

// stopWait is how long Stop waits for the framework to report the end.
var stopWait = 10 * time.Second

// machine is a running VM: launcher.Machine on top of vmControl and the
// framework's state changes.
type machine struct {
	ctl vmControl

	// vzOut is the write end of the console pipe the framework writes the
	// guest's output to; it is closed once the VM has ended, so that the
	// console copy drains and ends (copyDone).
	vzOut    io.Closer
	copyDone <-chan struct{}
	watcher  *endingWatcher
	// release is closed after the copy: the duplicated console files.
	release []io.Closer
	// keep holds what the framework uses by reference (the configuration,
	// its attachments, every *os.File whose descriptor it was handed: v3.7.1
	// does not duplicate descriptors) until the VM has ended.
	keep []any

	done     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	stopped  bool // Stop was called before the end
	outcome  launcher.Outcome
}

func newMachine(ctl vmControl) *machine {
	return &machine{ctl: ctl, done: make(chan struct{}), watcher: &endingWatcher{}}
}

// watchStates is the one reader of the VM's state changes: it converts
// each with conv and returns once the VM has stopped or failed (or the
// channel ends), after settling the outcome.
func watchStates[S any](m *machine, states <-chan S, conv func(S) vmState) {
	var err error = errors.New("lost track of the VM's state")
	for s := range states {
		if st := conv(s); st == stateStopped {
			err = nil
			break
		} else if st == stateError {
			err = errStateError
			break
		}
	}
	m.finish(err)
}

// finish releases the VM's files, settles the outcome and closes done.
func (m *machine) finish(err error) {
	if m.vzOut != nil {
		m.vzOut.Close()
	}
	if m.copyDone != nil {
		<-m.copyDone
	}
	for _, c := range m.release {
		c.Close()
	}
	m.mu.Lock()
	switch {
	case err != nil:
		m.outcome = launcher.Outcome{Ending: launcher.Failed, Err: err}
	case m.stopped:
		m.outcome = launcher.Outcome{Ending: launcher.Stopped}
	default:
		e := m.watcher.Ending()
		if e == 0 {
			e = launcher.PoweredOff
		}
		m.outcome = launcher.Outcome{Ending: e}
	}
	m.mu.Unlock()
	runtime.KeepAlive(m.keep)
	close(m.done)
}

func (m *machine) Done() <-chan struct{} { return m.done }

func (m *machine) Outcome() launcher.Outcome {
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
	case <-m.done:
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

// Stop pulls the plug and waits until the framework reports the end. It is
// a no-op once the VM has ended.
func (m *machine) Stop() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	var stopErr error
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		if !m.ctl.CanStop() {
			stopErr = errors.New("the VM cannot be stopped in its current state")
			return
		}
		if err := m.ctl.Stop(); err != nil {
			stopErr = fmt.Errorf("stopping the VM: %w", err)
		}
	})
	// A stop that races the guest's own poweroff fails; the end comes anyway.
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-m.done:
		return nil
	case <-t.C:
		if stopErr != nil {
			return stopErr
		}
		return fmt.Errorf("the VM did not stop within %v", stopWait)
	}
}
