//go:build linux

package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// Running a command: exec starts it and reports; its pieces are in
// stdio_linux.go (pipes), pty_linux.go (terminals), output_linux.go (its
// output), input_linux.go (its stdin stream) and kill_linux.go (ending it).

// Where the exec statuses of a command that did not start come from, as
// in shells and docker.
const (
	statusSetup    = 125 // bad working directory, user or terminal
	statusNotExec  = 126
	statusNotFound = 127
	passwdPath     = "/etc/passwd"
	groupPath      = "/etc/group"
)

// setupError is a command that could not be started, with the shell's
// status for it.
type setupError struct {
	status int
	err    error
}

func (e *setupError) Error() string { return e.err.Error() }

// prepared is a command ready to start.
type prepared struct {
	prog string
	argv []string
	env  []string
	dir  string
	acct *account
}

func (s *server) prepare(req *wire.ExecRequest) (*prepared, error) {
	var spec *wire.UserSpec
	if req.User != "" {
		u, err := wire.ParseUser(req.User)
		if err != nil {
			return nil, &setupError{statusSetup, err}
		}
		spec = &u
	}
	acct, err := resolveUser(spec, uint32(os.Geteuid()), passwdPath, groupPath)
	if err != nil {
		return nil, &setupError{statusSetup, err}
	}
	if acct.setIDs && os.Geteuid() != 0 && acct.uid != uint32(os.Geteuid()) {
		return nil, &setupError{statusSetup, fmt.Errorf("running as user %q needs the agent to run as root", req.User)}
	}
	p := &prepared{dir: string(req.Dir), acct: acct}
	if p.dir == "" {
		p.dir = "/"
	}
	if fi, err := os.Stat(p.dir); err != nil {
		return nil, &setupError{statusSetup, fmt.Errorf("working directory: %v", err)}
	} else if !fi.IsDir() {
		return nil, &setupError{statusSetup, fmt.Errorf("working directory %s is not a directory", p.dir)}
	}
	p.env = commandEnv(s.opts.Path, acct, req.TTY, wire.Strings(req.Env))
	p.argv = wire.Strings(req.Argv)
	if req.Shell != "" {
		p.argv = []string{"sh", "-c", string(req.Shell)}
	}
	prog, status, err := lookPath(p.argv[0], envValue(p.env, "PATH"), p.dir)
	if err != nil {
		return nil, &setupError{status, err}
	}
	p.prog = prog
	return p, nil
}

// startStatus is the shell's status for a failed start.
func startStatus(err error) int {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT:
			return statusNotFound
		case syscall.EACCES, syscall.ENOEXEC, syscall.EISDIR, syscall.EPERM, syscall.ETXTBSY:
			return statusNotExec
		}
	}
	return statusSetup
}

func (s *server) exec(ctx context.Context, o *op, req *wire.ExecRequest) {
	p, err := s.prepare(req)
	if err != nil {
		var se *setupError
		if errors.As(err, &se) {
			o.fail(se.status, "%v", se.err)
		} else {
			o.fail(statusSetup, "%v", err)
		}
		return
	}
	std, err := openStdio(req)
	if err != nil {
		o.fail(statusSetup, "%v", err)
		return
	}
	sys := &syscall.SysProcAttr{Setpgid: true}
	if req.TTY {
		// A new session with the terminal as its controlling terminal
		// (child descriptor 0); its process group id is its pid, too.
		sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
	if p.acct.setIDs {
		sys.Credential = &syscall.Credential{Uid: p.acct.uid, Gid: p.acct.gid, Groups: p.acct.groups}
	}
	proc, err := os.StartProcess(p.prog, p.argv, &os.ProcAttr{Dir: p.dir, Env: p.env, Files: std.child[:], Sys: sys})
	std.closeChild()
	if err != nil {
		std.closeOurs()
		o.fail(startStatus(err), "cannot run %q: %v", p.argv[0], err)
		return
	}
	x := &execution{
		op:   o,
		req:  req,
		io:   std,
		kill: newKiller(proc.Pid, req.KillGrace()),
		prog: p.argv[0],
	}
	x.id = s.register(x)
	defer s.unregister(x.id)
	// Started goes out before any output frame: the host counts output
	// only after it.
	startErr := o.w.Write(wire.FrameStarted, wire.EncodeStarted(x.id))
	x.run(ctx, proc, startErr)
}

// execution is one running command.
type execution struct {
	op   *op
	id   uint32
	req  *wire.ExecRequest
	io   *stdio
	kill *killer
	in   input
	prog string
}

// protocolError is a frame the host should not have sent.
type protocolError struct{ error }

func (x *execution) run(ctx context.Context, proc *os.Process, startErr error) {
	var outputs sync.WaitGroup
	for i, e := range x.io.outs {
		t := wire.FrameStdout
		if i == 1 {
			t = wire.FrameStderr
		}
		outputs.Add(1)
		go func() {
			defer outputs.Done()
			x.pump(e, t)
		}()
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- x.readControl() }()
	type waited struct {
		ps  *os.ProcessState
		err error
	}
	exited := make(chan waited, 1)
	go func() {
		ps, err := proc.Wait()
		exited <- waited{ps, err}
	}()

	var (
		w         *waited
		hostGone  = startErr != nil
		protoErr  error
		readerOut = false
		ctxDone   = ctx.Done()
		readerEnd = (<-chan error)(readerDone)
	)
	if hostGone {
		x.stopOutput(true)
		x.kill.terminate()
	}
	for w == nil {
		select {
		case e := <-exited:
			w = &e
		case <-ctxDone:
			ctxDone = nil
			x.op.logf("stream %d: exec %s: the session ended; ending the command", x.op.id, x.prog)
			x.kill.terminate()
		case err := <-readerEnd:
			readerEnd, readerOut = nil, true
			var pe protocolError
			if errors.As(err, &pe) {
				protoErr = pe.error
			} else {
				hostGone = true
				x.stopOutput(true)
			}
			x.kill.terminate()
		}
	}
	// Everything the command wrote before it exited is read: a pipe holds
	// it now; a terminal delivers it before its hangup.
	x.finishOutput(&outputs)
	x.finishInput()
	x.io.closeOurs()
	x.kill.finish()

	var status wire.Exit
	if w.err == nil {
		status = exitOf(w.ps)
	}
	switch {
	case w.err != nil:
		// Only when another process reaped the command (nothing should).
		x.op.fail(0, "waiting for %s: %v", x.prog, w.err)
	case hostGone:
		x.op.logf("stream %d: exec %s: the host went away; status %d", x.op.id, x.prog, status.Status)
	case protoErr != nil:
		x.op.fail(0, "%v", protoErr)
	default:
		b, err := status.Encode()
		if err == nil {
			err = x.op.w.Write(wire.FrameExit, b)
		}
		// Only failures are logged: the console is the user's, and a
		// line per command would crowd it.
		if err != nil {
			x.op.logf("stream %d: exec %s: sending the exit status: %v", x.op.id, x.prog, err)
		}
	}
	if !readerOut {
		x.op.conn.SetReadDeadline(time.Now())
		<-readerDone
	}
}

func exitOf(ps *os.ProcessState) wire.Exit {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return wire.Exit{Status: 128 + int(ws.Signal()), Signal: int(ws.Signal())}
	}
	return wire.Exit{Status: ps.ExitCode() & 0xff}
}

// readControl reads the host's control frames on the command's stream
// while it runs. It returns a protocolError for a frame that breaks the
// protocol, or the error that ended the stream (the host is gone, or run
// stopped it).
func (x *execution) readControl() error {
	for {
		f, err := x.op.r.Next()
		if err != nil {
			var v *wire.ViolationError
			switch {
			case err == io.EOF:
				return errors.New("the host closed the stream")
			case errors.As(err, &v):
				return protocolError{err}
			}
			return err // a reset, a closed session, or run's deadline
		}
		switch f.Type {
		case wire.FrameSignal:
			sig, err := wire.DecodeSignal(f.Payload)
			if err != nil {
				return protocolError{err}
			}
			x.kill.signal(syscall.Signal(sig))
		case wire.FrameResize:
			if x.io.master == nil {
				return protocolError{errors.New("a resize frame, but the command has no terminal")}
			}
			ws, err := wire.DecodeResize(f.Payload)
			if err != nil {
				return protocolError{err}
			}
			setWinSize(x.io.master, ws)
		case wire.FrameKill:
			x.kill.terminate()
		case wire.FrameCloseStdin:
			if !x.req.Stdin {
				return protocolError{errors.New("a close-stdin frame, but the request has no stdin")}
			}
			x.closeInput()
		case wire.FrameCloseOutput:
			out, err := wire.DecodeCloseOutput(f.Payload)
			if err != nil {
				return protocolError{err}
			}
			if x.io.master != nil && out == wire.OutputStderr {
				return protocolError{errors.New("a close-output frame for stderr, but the command's output is a terminal")}
			}
			x.io.closeOutput(out)
		case wire.FrameStdin, wire.FrameStdinEOF:
			return protocolError{fmt.Errorf("unexpected %s frame: a command's input goes on its stdin stream", f.Type)}
		default:
			return protocolError{fmt.Errorf("unexpected %s frame in an exec", f.Type)}
		}
	}
}
