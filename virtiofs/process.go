package virtiofs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/sonix-run/sonix-run/internal/proc"
	"github.com/sonix-run/sonix-run/internal/sockwait"
)

// Process is one running virtiofsd.
type Process struct {
	Share  Share
	Args   []string
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
		status = p.err.Error()
	}
	msg := fmt.Sprintf("virtiofsd for share %q (%s) %s", p.Share.Name, p.Share.Dir, status)
	if tail := strings.TrimSpace(p.stderr.String()); tail != "" {
		msg += ":\n" + indent(tail)
	}
	return errors.New(msg)
}

// Start runs virtiofsd for s and returns once its socket accepts
// connections. log, if not nil, also receives its stderr.
func Start(ctx context.Context, d *Daemon, s Share, log io.Writer) (*Process, error) {
	args, err := d.Args(s, os.Geteuid() == 0)
	if err != nil {
		return nil, err
	}
	p := &Process{Share: s, Args: args, stderr: proc.NewTail(4096), exited: make(chan struct{}), legacy: d.Flavour == Legacy}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout = log
	p.cmd.Stderr = p.stderr
	if log != nil {
		p.cmd.Stderr = io.MultiWriter(p.stderr, log)
	}
	if err := proc.Start(p.cmd); err != nil {
		return nil, fmt.Errorf("starting virtiofsd for share %q: %w", s.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	if err := sockwait.Listening(ctx, s.Socket, p.exited); err != nil {
		if errors.Is(err, sockwait.ErrExited) {
			p.cleanup()
			return nil, p.ExitError()
		}
		return nil, multierror.Append(fmt.Errorf("waiting for virtiofsd for share %q: %w", s.Name, err), p.Stop(0))
	}
	return p, nil
}

// Stop ends the daemon: it normally exits by itself once QEMU disconnects, so
// it gets grace to do that, then SIGTERM, then SIGKILL. Its socket and, for
// the legacy daemon, its lock file are removed.
func (p *Process) Stop(grace time.Duration) error {
	defer p.cleanup()
	if waitFor(p.exited, grace) {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if waitFor(p.exited, 2*time.Second) {
		return nil
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("virtiofsd for share %q did not stop on SIGTERM and was killed", p.Share.Name)
}

func (p *Process) cleanup() {
	os.Remove(p.Share.Socket)
	os.Remove(p.Share.Socket + ".pid") // the Rust daemon's lock file
	if p.legacy {
		os.Remove(legacyPidFile(p.Share.Socket))
	}
}

func waitFor(ch <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-ch:
			return true
		default:
			return false
		}
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
	Procs  []*Process
	failed chan *Process
}

// StartAll starts one daemon per share, in order; if one fails, those already
// started are stopped.
func StartAll(ctx context.Context, d *Daemon, shares []Share, log io.Writer) (*Group, error) {
	g := &Group{failed: make(chan *Process, len(shares))}
	for _, s := range shares {
		p, err := Start(ctx, d, s, log)
		if err != nil {
			return nil, multierror.Append(err, g.Stop(0)).ErrorOrNil()
		}
		g.Procs = append(g.Procs, p)
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

// Stop stops every daemon (in reverse order of starting) and collects every error.
func (g *Group) Stop(grace time.Duration) error {
	var result *multierror.Error
	for i := len(g.Procs) - 1; i >= 0; i-- {
		if err := g.Procs[i].Stop(grace); err != nil {
			result = multierror.Append(result, err)
		}
	}
	return result.ErrorOrNil()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
