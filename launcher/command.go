package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/term"
)

// agentHint is how long a --run waits before saying that the guest may
// have no agent; it goes on waiting (--timeout bounds it).
const agentHint = 2 * time.Minute

// runCommand runs cfg.Command in the booted guest, then powers it off; the
// result is the command's status, or why there is none.
func runCommand(ctx context.Context, inst *Instance, cfg *Config) error {
	agent, err := inst.Agent(ctx)
	if err != nil {
		return inst.Stop(&Error{Reason: Failure, Err: err})
	}
	defer agent.Close()

	hint := time.AfterFunc(agentHint, func() {
		inst.r.console.notice("sonix-run: still waiting for the guest's agent; the system needs it (sonix-run's NixOS module, docs/harness.md)")
	})
	var stdin io.Reader
	if cfg.Stdin != nil && !term.IsTerminal(int(cfg.Stdin.Fd())) {
		stdin = cfg.Stdin
	}
	ready := false
	err = agent.WaitReady(ctx)
	if err == nil {
		ready = true
		hint.Stop()
		var status int
		status, err = agent.Run(ctx, cfg.Command, stdin, cfg.Stdout, cfg.Stderr)
		if err == nil {
			powerOff(inst, agent, cfg.StopTimeout)
			if status == 0 {
				return nil
			}
			return &Error{Reason: CommandExit, Status: status, Err: fmt.Errorf("the command exited with status %d", status)}
		}
	}
	hint.Stop()
	if !errors.Is(err, ErrVMEnded) {
		return inst.Stop(&Error{Reason: Failure, Err: err})
	}
	// The VM ended first: say how, or that the status never came.
	werr := inst.Wait()
	switch ReasonOf(werr) {
	case GuestPanic, Timeout, Interrupted:
		return werr
	}
	if werr != nil && ReasonOf(werr) == Failure {
		return werr
	}
	if !ready {
		return fail(BootFailure, "the guest ended before its agent was ready (does the system run sonix-run's guest agent? see docs/harness.md)")
	}
	return fail(NoReport, "the guest ended without reporting the command's exit status")
}

// powerOff asks the agent to power the guest off, and stops the VM if it
// has not ended within grace.
func powerOff(inst *Instance, agent *Agent, grace time.Duration) {
	if agent.PowerOff() == nil {
		select {
		case <-inst.Done():
			return
		case <-time.After(grace):
		}
	}
	inst.Stop(&Error{Reason: Interrupted, Err: errors.New("stopped after the command")})
}
