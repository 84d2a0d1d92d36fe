package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/pollfile"
)

// connectAgent connects to the agent's port as soon as the VM runs: the
// guest's agent finds a host already there when it opens the port. The
// link sends nothing until the agent has announced itself, and survives
// the agent restarting.
func (i *Instance) connectAgent(ctx context.Context) error {
	conn, err := i.machine.AgentConn(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the agent's port: %w", err)
	}
	s := agent.NewLink(conn, agent.LinkOptions{})
	i.link = s
	i.agent = agent.NewClient(s.Dial)
	if ports := i.machine.AgentPort(); ports != nil {
		// The port closing is how a dead agent is noticed at once: its
		// socket sees no end of file, and the next agent comes on the
		// same connection.
		followed := make(chan struct{})
		go func() {
			defer close(followed)
			for {
				select {
				case st, ok := <-ports:
					if !ok {
						return
					}
					s.PortOpenAt(st.Open, st.At)
				case <-s.Done():
					return
				}
			}
		}()
		i.cl.push("following the agent's port", 2*time.Second, func(c context.Context) error {
			select {
			case <-followed:
				return nil
			case <-c.Done():
				return c.Err()
			}
		})
	}
	// Pushed last, so run first: closing the link ends the follower.
	i.cl.push("agent link", 2*time.Second, func(context.Context) error {
		s.Close()
		return nil
	})
	i.guestReady = make(chan struct{})
	if i.cfg.Workdir == "" {
		close(i.guestReady)
		return nil
	}
	// Mount --cwd's share in the guest as soon as its agent answers, before
	// any command runs (runCommand and exec wait for guestReady).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(i.guestReady)
		i.guestErr = i.mountWorkdir(ctx)
	}()
	i.cl.push("mounting --cwd", 2*time.Second, func(c context.Context) error {
		cancel()
		select {
		case <-done:
			return nil
		case <-c.Done():
			return c.Err()
		}
	})
	return nil
}

// mountWorkdir mounts the --cwd share at the same path in the guest.
func (i *Instance) mountWorkdir(ctx context.Context) error {
	if _, err := i.agent.Hello(ctx); err != nil {
		return err
	}
	opts := "rw"
	if i.cfg.WorkdirReadOnly {
		opts = "ro"
	}
	var stderr strings.Builder
	status, err := i.agent.Exec(ctx, agent.Command{Argv: []string{"sh", "-c",
		`mkdir -p "$1" && mount -t virtiofs -o "$3" "$2" "$1"`, "sh", i.cfg.Workdir, config.WorkdirTag, opts}},
		agent.Stdio{Stderr: &stderr})
	if err == nil && status != 0 {
		err = fmt.Errorf("mounting --cwd %s in the guest: status %d: %s", i.cfg.Workdir, status, strings.TrimSpace(stderr.String()))
	}
	return err
}

// waitGuestReady waits until what must happen in the guest before commands
// (the --cwd mount) has happened, and says whether it failed.
func (i *Instance) waitGuestReady(ctx context.Context) error {
	select {
	case <-i.guestReady:
		return i.guestErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// vmEndGrace is how long a command whose agent session broke waits for the
// VM to end by itself before the agent is taken to have failed.
const vmEndGrace = 3 * time.Second

// agentHint is how long a --run waits before saying that the guest may
// have no agent; it goes on waiting (--timeout bounds it).
const agentHint = 2 * time.Minute

// agentCommand is cmd as the agent takes it; workdir (--cwd) is where it
// runs unless it says otherwise.
func agentCommand(cmd *config.Command, workdir string) agent.Command {
	dir := cmd.Dir
	if dir == "" {
		dir = workdir
	}
	return agent.Command{Argv: cmd.Argv, Shell: cmd.Shell, User: cmd.User, Dir: dir, TTY: cmd.TTY}
}

// runCommand runs cfg.Command in the booted guest, then powers it off; the
// result is the command's status, or why there is none.
func (i *Instance) runCommand() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // ends with the run, or when the command is done
		select {
		case <-i.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	hint := time.AfterFunc(agentHint, func() {
		i.msgs.always("sonix-run: still waiting for the guest's agent; the system needs it (sonix-run's NixOS module, docs/protocol.md)")
	})
	_, err := i.agent.Hello(ctx)
	hint.Stop()
	if err != nil {
		return i.noStatus(false, err)
	}
	if err := i.waitGuestReady(ctx); err != nil {
		return i.noStatus(true, err)
	}
	var stdin io.Reader
	if f := i.cfg.Stdin; f != nil && !term.IsTerminal(int(f.Fd())) {
		stdin = f
		if p, ok := pollfile.Reopen(f, os.O_RDONLY); ok {
			defer p.Close()
			stdin = p
		}
	}
	status, err := i.agent.Exec(ctx, agentCommand(i.cfg.Command, i.cfg.Workdir), agent.Stdio{Stdin: stdin, Stdout: i.out.stdout, Stderr: i.out.stderr})
	if ge := (*agent.GuestError)(nil); errors.As(err, &ge) && ge.Status > 0 {
		// The command could not start (not found, not executable): the
		// shell's status, and why on stderr, as a shell would.
		i.msgs.always("sonix-run: %s", ge.Message)
		status, err = ge.Status, nil
	}
	if err != nil {
		return i.noStatus(true, err)
	}
	if err := i.powerOff(); err != nil {
		return err
	}
	if status == 0 {
		return nil
	}
	return &Error{Reason: CommandExit, Status: status, Err: fmt.Errorf("the command exited with status %d", status)}
}

// noStatus says why a command has no status: how the VM ended, or what failed.
func (i *Instance) noStatus(ready bool, err error) error {
	// The agent's session usually ends because the VM is ending: give the
	// VM a moment to say so before deciding that the agent failed.
	t := time.NewTimer(vmEndGrace)
	defer t.Stop()
	select {
	case <-i.done:
	case <-t.C:
		// The VM goes on: its agent stopped, or failed. Stop the VM,
		// keeping that as the reason; the statuses are exec's.
		switch {
		case errors.Is(err, agent.ErrStatusUnknown):
			return i.Stop(&Error{Reason: NoReport, Err: err})
		case agent.SessionEndOf(err) != "" && !errors.Is(err, agent.ErrProtocol):
			return i.Stop(&Error{Reason: BootFailure, Err: fmt.Errorf("no guest agent to run the command: %w", err)})
		}
		return i.Stop(&Error{Reason: Failure, Err: err})
	}
	werr := i.Wait()
	switch ReasonOf(werr) {
	case GuestPanic, Timeout, Interrupted, Failure:
		if werr != nil {
			return werr
		}
	}
	if !ready {
		return joinTeardown(fail(BootFailure, "the guest ended before its agent was ready (does the system run sonix-run's guest agent? see docs/protocol.md)"), errors.Unwrap(werr))
	}
	return joinTeardown(fail(NoReport, "the guest ended without reporting the command's exit status"), errors.Unwrap(werr))
}

// powerOff asks the agent to power the guest off and waits for the end;
// the VM is stopped if it has not ended within StopTimeout. What went wrong
// in cleaning up is the run's result (exit 120), never silently dropped.
func (i *Instance) powerOff() error {
	ctx, cancel := context.WithTimeout(context.Background(), i.cfg.StopTimeout)
	defer cancel()
	if err := i.agent.PowerOff(ctx); err == nil {
		select {
		case <-i.done:
		case <-ctx.Done():
		}
	}
	err := i.Stop(&Error{Reason: Interrupted, Err: errStoppedAfterCommand})
	var e *Error
	if errors.As(err, &e) && e.Reason == Interrupted && e.Signal == nil && errors.Is(err, errStoppedAfterCommand) {
		err = nil // our own stop
	}
	if err == nil && i.teardownErr != nil {
		return &Error{Reason: Failure, Err: fmt.Errorf("cleaning up: %w", i.teardownErr)}
	}
	return err
}

var errStoppedAfterCommand = errors.New("stopped after the command")
