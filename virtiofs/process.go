package virtiofs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
	"github.com/sonix-run/sonix-run/internal/sockwait"
)

const (
	// listenTimeout bounds the wait for a daemon's socket; both flavours
	// listen within milliseconds of starting.
	listenTimeout = 30 * time.Second
	// termGrace is how long daemons get to exit after SIGTERM.
	termGrace = 2 * time.Second
	// killWait bounds the wait after SIGKILL: only a process stuck in the
	// kernel outlives it.
	killWait = 5 * time.Second
	// stderrLines is how much of a daemon's stderr a failure quotes.
	stderrLines = 12
)

// Process is one running virtiofsd.
type Process struct {
	Share  Share
	Args   []string // its command line, as Args built it
	cmd    *exec.Cmd
	stderr *proc.Tail
	exited chan struct{} // closed when the process has ended
	err    error         // its wait error, valid once exited is closed
	legacy bool
}

// Exited is closed when the daemon has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitError describes how the daemon ended, with the tail of its stderr.
func (p *Process) ExitError() error {
	status := "exited"
	if p.err != nil {
		status = "exited: " + p.err.Error()
	}
	return p.failure(status)
}

// failure is an error naming p's share, saying what went wrong, and quoting
// the end of the daemon's stderr.
func (p *Process) failure(what string) error {
	msg := fmt.Sprintf("virtiofsd for %s %s", p.Share, what)
	if tail := lastLines(p.stderr.String(), stderrLines); tail != "" {
		msg += "; its stderr ends:\n" + indent(tail)
	}
	return errors.New(msg)
}

// Start runs virtiofsd for s and returns once its socket accepts
// connections. log, if not nil, also receives its stdout and stderr. A
// writable share's daemon runs under the filter of guard.go.
func Start(ctx context.Context, d *Daemon, s Share, log io.Writer) (*Process, error) {
	args, g, err := d.command(s, os.Geteuid() == 0)
	if err != nil {
		return nil, err
	}
	if g != nil {
		if err := checkGuard(g); err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	return start(ctx, d, s, args, g, log)
}

func start(ctx context.Context, d *Daemon, s Share, args []string, g *guard, log io.Writer) (*Process, error) {
	p := &Process{Share: s, Args: args, stderr: proc.NewTail(4096), exited: make(chan struct{}), legacy: d.Flavour == Legacy}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout = log
	p.cmd.Stderr = p.stderr
	if log != nil {
		p.cmd.Stderr = io.MultiWriter(p.stderr, log)
	}
	// Its stderr is copied through a pipe; should something it started
	// keep the pipe open after it exits, Wait still returns.
	p.cmd.WaitDelay = time.Second
	var err error
	if g != nil {
		err = startGuarded(p.cmd, g)
	} else {
		err = proc.Start(p.cmd)
	}
	if err != nil {
		if args[0] != d.Path {
			err = fmt.Errorf("%w (serving a read-only share without --readonly needs util-linux's unshare and mount)", err)
		}
		return nil, fmt.Errorf("starting virtiofsd for %s: %w", s, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	wctx, cancel := context.WithTimeout(ctx, listenTimeout)
	defer cancel()
	if err := sockwait.Listening(wctx, s.Socket, p.exited); err != nil {
		if errors.Is(err, sockwait.ErrExited) {
			p.cleanup()
			return nil, p.ExitError()
		}
		serr := stopAll([]*Process{p}, 0)
		if ctx.Err() != nil { // the run was called off
			return nil, errors.Join(fmt.Errorf("starting virtiofsd for %s: %w", s, ctx.Err()), serr)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("did not listen on %s within %v, and was stopped", s.Socket, listenTimeout)
		}
		return nil, errors.Join(p.failure(err.Error()), serr)
	}
	return p, nil
}

// Stop ends the daemon: it normally exits by itself once QEMU disconnects, so
// it gets grace to do that, then SIGTERM, then SIGKILL. Its socket and, for
// the legacy daemon, its lock file are removed.
func (p *Process) Stop(grace time.Duration) error {
	return stopAll([]*Process{p}, grace)
}

// stopAll stops procs against shared deadlines: all get the same grace, then
// those left all get SIGTERM and termGrace, then SIGKILL. However many there
// are, it takes at most grace + termGrace + killWait.
func stopAll(procs []*Process, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	var left []*Process
	for _, p := range procs {
		if !waitUntil(p.exited, deadline) {
			left = append(left, p)
		}
	}
	for _, p := range left {
		p.signal(syscall.SIGTERM)
	}
	deadline = time.Now().Add(termGrace)
	var killed []*Process
	for _, p := range left {
		if !waitUntil(p.exited, deadline) {
			p.signal(syscall.SIGKILL)
			killed = append(killed, p)
		}
	}
	var errs []error
	deadline = time.Now().Add(killWait)
	for _, p := range killed {
		if waitUntil(p.exited, deadline) {
			errs = append(errs, p.failure(fmt.Sprintf("did not stop within %v of SIGTERM and was killed", termGrace)))
		} else {
			errs = append(errs, p.failure(fmt.Sprintf("still runs %v after SIGKILL (pid %d)", killWait, p.cmd.Process.Pid)))
		}
	}
	for _, p := range procs {
		p.cleanup()
	}
	return errors.Join(errs...)
}

// signal signals the daemon's process group (proc.Start makes it one):
// what a wrapper or the daemon started goes with it, and holds no pipe of
// ours open past the end.
func (p *Process) signal(sig syscall.Signal) {
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

func (p *Process) cleanup() {
	os.Remove(p.Share.Socket)
	os.Remove(p.Share.Socket + ".pid") // the Rust daemon's lock file
	if p.legacy {
		os.Remove(legacyPidFile(p.Share.Socket))
	}
	// The read-only view's mount point: on the host, an empty directory.
	os.Remove(readOnlyMountPoint(p.Share.Socket))
}

// waitUntil waits for ch to close until deadline; a deadline that has passed
// still sees a channel that is already closed.
func waitUntil(ch <-chan struct{}, deadline time.Time) bool {
	select {
	case <-ch:
		return true
	default:
	}
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// Group is the set of daemons of one run.
type Group struct {
	Procs  []*Process // in the order of the shares
	failed chan *Process
}

// StartAll starts one daemon per share, all at once, and returns when every
// one listens. Every command line is built, and every filter a writable
// share needs (guard.go) is made, before anything starts, so a share that
// cannot be served starts nothing. If one fails, the others are not waited
// for: all that started are stopped.
func StartAll(ctx context.Context, d *Daemon, shares []Share, log io.Writer) (*Group, error) {
	asRoot := os.Geteuid() == 0
	argvs := make([][]string, len(shares))
	guards := make([]*guard, len(shares))
	for i, s := range shares {
		var err error
		if argvs[i], guards[i], err = d.command(s, asRoot); err != nil {
			return nil, err
		}
		if guards[i] != nil {
			if err := checkGuard(guards[i]); err != nil {
				return nil, fmt.Errorf("%s: %w", s, err)
			}
		}
	}
	return startAll(ctx, d, shares, argvs, guards, log)
}

func startAll(ctx context.Context, d *Daemon, shares []Share, argvs [][]string, guards []*guard, log io.Writer) (*Group, error) {
	startCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	procs := make([]*Process, len(shares))
	errs := make([]error, len(shares))
	var wg sync.WaitGroup
	for i := range shares {
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = start(startCtx, d, shares[i], argvs[i], guards[i], log)
			if errs[i] != nil {
				cancel() // the run fails: the others need not finish starting
			}
		}()
	}
	wg.Wait()

	var failures []error
	var started []*Process
	for i, err := range errs {
		if err == nil {
			started = append(started, procs[i])
			continue
		}
		if ctx.Err() == nil && errors.Is(err, context.Canceled) {
			continue // stopped because another one failed
		}
		failures = append(failures, err)
	}
	if len(failures) == 0 && len(started) < len(shares) {
		failures = errs // cannot happen; never hide a failure
	}
	if len(failures) > 0 {
		if err := stopAll(started, 0); err != nil {
			failures = append(failures, err)
		}
		return nil, errors.Join(failures...)
	}

	g := &Group{Procs: procs, failed: make(chan *Process, len(procs))}
	for _, p := range procs {
		// Ends when p does, which Stop ensures; the channel has room for all.
		go func() {
			<-p.exited
			g.failed <- p
		}()
	}
	return g, nil
}

// Exited delivers each daemon that ends. While the VM runs, that is a failure:
// the guest's I/O on that share would hang.
func (g *Group) Exited() <-chan *Process { return g.failed }

// ExitErrors describes each daemon that has already ended.
func (g *Group) ExitErrors() []error {
	if g == nil {
		return nil
	}
	var errs []error
	for _, p := range g.Procs {
		select {
		case <-p.exited:
			errs = append(errs, p.ExitError())
		default:
		}
	}
	return errs
}

// Stop stops every daemon and returns every error. They share one grace
// period and one SIGTERM deadline, so it takes no longer for many than for
// one: at most grace + 7 s.
func (g *Group) Stop(grace time.Duration) error {
	if g == nil {
		return nil
	}
	return stopAll(g.Procs, grace)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
