package launcher

import (
	"context"
	"fmt"
	"time"

	"github.com/sonix-run/sonix-run/vmm"
)

// supervise watches the running VM until it ends, acting on signals, the
// timeout, Ctrl-a x, stop requests and helper failures, and says how the
// run ended.
func (i *Instance) supervise(ctx context.Context) error {
	supervising(i)
	cfg := i.cfg
	var timeout, stopTimeout <-chan time.Time
	if cfg.Timeout > 0 {
		t := time.NewTimer(cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var linkEnded <-chan struct{}
	if i.link != nil {
		linkEnded = i.link.Done()
	}
	quit, signals, ctxDone := i.console.quit, cfg.Signals, ctx.Done()
	var ended *Error // set when sonix-run decides to end the run
	var linkFailed *Error
	var linkGrace <-chan time.Time
	var stopDeadline <-chan time.Time
	stop := func(e *Error) {
		if ended == nil {
			ended = e
		}
		if stopDeadline != nil {
			return
		}
		t := time.NewTimer(stopBound)
		stopDeadline = t.C
		// Start the stop without waiting (a context already ended): Done
		// below tells when the VM has ended, and the teardown's Stop waits,
		// bounded, and reports what went wrong.
		now, cancel := context.WithCancel(context.Background())
		cancel()
		i.machine.Stop(now)
	}
	for {
		select {
		case <-i.machine.Done():
			return i.outcome(ended)
		case <-timeout:
			timeout = nil
			i.msgs.always("sonix-run: --timeout %v expired; stopping the VM", cfg.Timeout)
			stop(fail(Timeout, "--timeout %v expired", cfg.Timeout))
		case <-quit:
			quit = nil
			stop(fail(Interrupted, "stopped with Ctrl-a x"))
		case <-linkEnded:
			// The port's connection ends when QEMU exits, and that may be
			// seen first; a session that ends under a VM that goes on
			// (a guest breaking the protocol) ends the run.
			linkEnded = nil
			if err := i.link.Err(); err != nil {
				linkFailed = &Error{Reason: Failure, Err: fmt.Errorf("the link to the guest agent failed: %w", err)}
				t := time.NewTimer(vmEndGrace)
				defer t.Stop()
				linkGrace = t.C
			}
		case <-linkGrace:
			linkGrace = nil
			stop(linkFailed)
		case sig := <-signals:
			e := &Error{Reason: Interrupted, Signal: sig, Err: fmt.Errorf("stopped by %v", sig)}
			if ended != nil || stopTimeout != nil {
				i.msgs.always("sonix-run: %v again: stopping the VM now", sig)
				stop(e)
				continue
			}
			ended = e
			stopTimeout = i.pressPowerButton(ctx, sig.String(), stop)
		case <-stopTimeout:
			stopTimeout = nil
			i.msgs.always("sonix-run: the guest did not power off within %v; stopping the VM", cfg.StopTimeout)
			stop(ended)
		case r := <-i.stopReq:
			if r.graceful && ended == nil && stopTimeout == nil {
				// The agent powers off any guest it runs in; the power
				// button needs a guest that handles it (systemd does).
				ended = r.why
				if i.agentPowerOff() {
					stopTimeout = time.NewTimer(cfg.StopTimeout).C
					continue
				}
				stopTimeout = i.pressPowerButton(ctx, r.why.Error(), stop)
				continue
			}
			stop(r.why)
		case <-ctxDone:
			ctxDone = nil
			stop(&Error{Reason: Interrupted, Err: ctx.Err()})
		case <-stopDeadline:
			// A hypervisor that does not end when stopped: give up on it
			// rather than wait for ever; the teardown says what is left.
			err := fmt.Errorf("the VM did not end within %v of being stopped", stopBound)
			if ended == nil {
				return &Error{Reason: Failure, Err: err}
			}
			return &Error{Reason: ended.Reason, Signal: ended.Signal, Err: fmt.Errorf("%w; %v", ended.Err, err)}
		}
	}
}

// agentPowerOff asks the guest's agent, if it is up, to power off; it
// waits at most a second, so the supervisor stays responsive.
func (i *Instance) agentPowerOff() bool {
	if i.agent == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return i.agent.PowerOff(ctx) == nil
}

// pressPowerButton asks the guest to power off and returns the timer after
// which it is stopped; when the button cannot be pressed, it stops at once.
func (i *Instance) pressPowerButton(ctx context.Context, why string, stop func(*Error)) <-chan time.Time {
	i.msgs.always("sonix-run: %s: pressing the guest's power button; waiting up to %v (signal again to stop at once)", why, i.cfg.StopTimeout)
	if err := i.machine.Shutdown(ctx); err != nil {
		i.msgs.always("sonix-run: power button: %v; stopping the VM", err)
		stop(nil)
		return nil
	}
	return time.NewTimer(i.cfg.StopTimeout).C
}

// outcome turns how the VM ended into the run's result.
func (i *Instance) outcome(ended *Error) error {
	out := i.machine.Outcome()
	switch out.Ending {
	case vmm.PoweredOff:
		if ended != nil && (ended.Signal != nil || ended.Reason == Failure) {
			return ended // powered off because sonix-run was told to stop, or as it stopped a failed run
		}
		return nil
	case vmm.Panicked:
		if i.vm.DumpPath == "" {
			return fail(GuestPanic, "the guest kernel panicked")
		}
		if out.DumpErr != nil {
			return fail(GuestPanic, "the guest kernel panicked; its memory could not be dumped to %s: %v", i.vm.DumpPath, out.DumpErr)
		}
		return fail(GuestPanic, "the guest kernel panicked; its memory is in %s (open it with `crash vmlinux %s` or `drgn -c %s -s vmlinux`, vmlinux from the kernel's build tree)", i.vm.DumpPath, i.vm.DumpPath, i.vm.DumpPath)
	case vmm.Reset:
		if ended != nil {
			return ended
		}
		return fail(GuestReset, "the guest rebooted, which ends the run (a panic that the guest could not report looks the same: give it the pvpanic driver)")
	case vmm.Stopped:
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

// supervising is called as the supervisor takes over (a test hook).
var supervising = func(*Instance) {}

// stopBound is how long a VM may take to end once stopped (QEMU is killed
// after 2 s; Virtualization.framework may take longer).
var stopBound = 15 * time.Second
