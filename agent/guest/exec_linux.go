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

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// ptyHangupWait bounds how long, after a command on a terminal has exited,
// its output waits for the terminal's hangup (all its holders closed it).
// Terminal output can still be in the kernel's buffers when the process
// has exited; the hangup comes once it has all been read. A process left
// in the background that keeps the terminal open would hold it forever.
const ptyHangupWait = 2 * time.Second

// Where the exec statuses of a command that did not start come from, as
// in shells and docker.
const (
	statusSetup      = 125 // bad working directory, user or terminal
	statusNotExec    = 126
	statusNotFound   = 127
	passwdPath       = "/etc/passwd"
	groupPath        = "/etc/group"
	defaultRows      = 24
	defaultCols      = 80
	defaultEOFString = "\x04"
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

// stdio is a command's standard streams: the child's ends, and ours.
type stdio struct {
	child       [3]*os.File
	in          *os.File   // we write the command's input here (nil: no input)
	outs        []*os.File // we read the command's output here
	master      *os.File   // the terminal's master side, with TTY
	closeOnce   sync.Once
	closeInOnce sync.Once
}

func openStdio(req *wire.ExecRequest) (*stdio, error) {
	s := &stdio{}
	if req.TTY {
		ws := wire.WinSize{Rows: req.Rows, Cols: req.Cols}
		if ws.Rows == 0 {
			ws.Rows = defaultRows
		}
		if ws.Cols == 0 {
			ws.Cols = defaultCols
		}
		m, t, err := openPTY(ws)
		if err != nil {
			return nil, err
		}
		s.master, s.child = m, [3]*os.File{t, t, t}
		s.outs = []*os.File{m}
		if req.Stdin {
			s.in = m
		}
		return s, nil
	}
	var err error
	fail := func(e error) (*stdio, error) {
		s.closeChild()
		s.closeOurs()
		return nil, e
	}
	if req.Stdin {
		if s.child[0], s.in, err = os.Pipe(); err != nil {
			return fail(err)
		}
	} else if s.child[0], err = os.Open(os.DevNull); err != nil {
		return fail(err)
	}
	for i := 1; i <= 2; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		s.child[i] = w
		s.outs = append(s.outs, r)
	}
	return s, nil
}

func (s *stdio) closeChild() {
	seen := map[*os.File]bool{}
	for _, f := range s.child {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}

// closeIn closes the command's input: with a pipe, the command reads end
// of file.
func (s *stdio) closeIn() {
	if s.in != nil && s.in != s.master {
		s.closeInOnce.Do(func() { s.in.Close() })
	}
}

func (s *stdio) closeOurs() {
	s.closeOnce.Do(func() {
		s.closeIn()
		for _, f := range s.outs {
			f.Close()
		}
	})
}

// openPTY opens a pseudo-terminal of size ws. The master is opened here
// rather than with creack/pty, whose Open and Setsize call File.Fd: that
// switches the master to blocking mode, and a blocked read could then
// neither time out nor be interrupted, which the end of a command needs.
func openPTY(ws wire.WinSize) (master, tty *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a pseudo-terminal (is devpts mounted on /dev/pts?): %w", err)
	}
	var n uint32
	cerr := control(m, func(fd int) error {
		var err error
		if n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN); err != nil {
			return err
		}
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
	if cerr != nil {
		m.Close()
		return nil, nil, fmt.Errorf("setting up a pseudo-terminal: %w", cerr)
	}
	t, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("opening a pseudo-terminal (is devpts mounted on /dev/pts?): %w", err)
	}
	return m, t, nil
}

// control runs f on the file's descriptor without switching it to
// blocking mode.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
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
	window := 0
	if req.Stdin {
		window = wire.StdinWindow
	}
	x := &execution{
		op:    o,
		req:   req,
		io:    std,
		kill:  newKiller(proc.Pid, req.KillGrace()),
		input: newInputQueue(window),
		prog:  p.argv[0],
	}
	// Started goes out before any output frame: the host counts output
	// only after it.
	startErr := o.w.Write(wire.FrameStarted, wire.EncodeCount(uint32(window)))
	x.run(ctx, proc, startErr)
}

// execution is one running command.
type execution struct {
	op    *op
	req   *wire.ExecRequest
	io    *stdio
	kill  *killer
	input *inputQueue
	prog  string
}

// protocolError is a frame the host should not have sent.
type protocolError struct{ error }

func (x *execution) run(ctx context.Context, proc *os.Process, startErr error) {
	var outputs, input sync.WaitGroup
	for i, f := range x.io.outs {
		t := wire.FrameStdout
		if i == 1 {
			t = wire.FrameStderr
		}
		outputs.Add(1)
		go func() {
			defer outputs.Done()
			x.pump(f, t)
		}()
	}
	if x.io.in != nil {
		input.Add(1)
		go func() {
			defer input.Done()
			x.writeInput()
		}()
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- x.readFrames() }()
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
	x.input.close()
	if x.io.in != nil {
		x.io.in.SetWriteDeadline(time.Now())
	}
	input.Wait()
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

// stopOutput makes the output pumps stop: at once when the host is gone
// (their frames could not be sent), else after what is buffered.
func (x *execution) stopOutput(hostGone bool) {
	if hostGone {
		x.op.conn.SetWriteDeadline(time.Now())
	}
	for _, f := range x.io.outs {
		f.SetReadDeadline(time.Now())
	}
}

// finishOutput waits for the output pumps once the command has exited.
func (x *execution) finishOutput(outputs *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		outputs.Wait()
		close(done)
	}()
	if x.io.master != nil {
		t := time.NewTimer(ptyHangupWait)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
	x.stopOutput(false)
	<-done
}

// pump sends what the command writes to f as frames of type t until end of
// file, or, once stopOutput set a deadline, until f holds nothing more.
func (x *execution) pump(f *os.File, t wire.FrameType) {
	buf := make([]byte, wire.MaxData)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if x.op.w.Write(t, buf[:n]) != nil {
				return
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			x.drain(f, t, buf)
			return
		default:
			// io.EOF for a pipe; EIO for a terminal whose every holder has
			// closed it.
			return
		}
	}
}

// drain sends what f holds now, without waiting for more.
func (x *execution) drain(f *os.File, t wire.FrameType, buf []byte) {
	f.SetReadDeadline(time.Time{})
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		var rerr error
		// Returning true makes this one non-blocking read attempt.
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return true
		}); err != nil {
			return
		}
		if rerr == unix.EINTR {
			continue
		}
		if n <= 0 || rerr != nil {
			return
		}
		if x.op.w.Write(t, buf[:n]) != nil {
			return
		}
	}
}

// readFrames reads the host's frames during the command. It returns a
// protocolError for a frame that breaks the protocol, or the error that
// ended the stream (the host is gone, or run stopped it).
func (x *execution) readFrames() error {
	eof := false
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
		case wire.FrameStdin, wire.FrameStdinEOF:
			if !x.req.Stdin {
				return protocolError{fmt.Errorf("unexpected %s frame: the request has no stdin", f.Type)}
			}
			if eof {
				return protocolError{fmt.Errorf("unexpected %s frame after stdin-eof", f.Type)}
			}
			if f.Type == wire.FrameStdinEOF {
				eof = true
				x.input.pushEOF()
			} else if err := x.input.push(f.Payload); err != nil {
				return protocolError{err}
			}
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
			control(x.io.master, func(fd int) error {
				return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
			})
		case wire.FrameKill:
			x.kill.terminate()
		default:
			return protocolError{fmt.Errorf("unexpected %s frame in an exec", f.Type)}
		}
	}
}

// writeInput writes the host's stdin data to the command, acknowledging
// each chunk once written, until the end of input or until the command
// stops taking it.
func (x *execution) writeInput() {
	for {
		chunk, eof, ok := x.input.pop()
		if !ok {
			return
		}
		if eof {
			if x.io.master != nil {
				// On a terminal, end of input is the EOF character, as
				// typed (Ctrl-D in canonical mode).
				x.io.in.Write(x.eofChar())
			} else {
				x.io.closeIn()
			}
			return
		}
		if _, err := x.io.in.Write(chunk); err != nil {
			// The command closed its input or ended; the rest is dropped.
			return
		}
		x.input.ack(len(chunk))
		if x.op.w.Write(wire.FrameStdinAck, wire.EncodeCount(uint32(len(chunk)))) != nil {
			return
		}
	}
}

func (x *execution) eofChar() []byte {
	c := []byte(defaultEOFString)
	control(x.io.master, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err == nil && t.Cc[unix.VEOF] != 0 {
			c[0] = t.Cc[unix.VEOF]
		}
		return err
	})
	return c
}

// inputQueue holds stdin data between the frame reader and the writer to
// the command. The host keeps within the stdin window, so it is bounded,
// and the frame reader never waits on the command.
type inputQueue struct {
	mu          sync.Mutex
	chunks      [][]byte
	eof         bool
	closed      bool
	outstanding int
	window      int
	ready       chan struct{}
}

func newInputQueue(window int) *inputQueue {
	return &inputQueue{window: window, ready: make(chan struct{}, 1)}
}

func (q *inputQueue) notify() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *inputQueue) push(p []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.outstanding+len(p) > q.window {
		return fmt.Errorf("stdin data beyond the window: %d bytes unacknowledged, window %d", q.outstanding+len(p), q.window)
	}
	q.outstanding += len(p)
	if !q.closed {
		q.chunks = append(q.chunks, append([]byte(nil), p...))
		q.notify()
	}
	return nil
}

func (q *inputQueue) pushEOF() {
	q.mu.Lock()
	q.eof = true
	q.mu.Unlock()
	q.notify()
}

func (q *inputQueue) ack(n int) {
	q.mu.Lock()
	q.outstanding -= n
	q.mu.Unlock()
}

// pop waits for the next chunk, or the end of input; ok is false once
// the queue is closed.
func (q *inputQueue) pop() (chunk []byte, eof, ok bool) {
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return nil, false, false
		case len(q.chunks) > 0:
			chunk = q.chunks[0]
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
			q.mu.Unlock()
			return chunk, false, true
		case q.eof:
			q.mu.Unlock()
			return nil, true, true
		}
		q.mu.Unlock()
		<-q.ready
	}
}

func (q *inputQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.chunks = nil
	q.mu.Unlock()
	q.notify()
}

// killer signals a command's process group: on request, and to end it
// (SIGTERM, then SIGKILL after the grace).
type killer struct {
	pgid  int
	grace time.Duration

	mu          sync.Mutex
	terminating bool
	finished    bool
	stop        chan struct{}
	done        chan struct{}
}

func newKiller(pgid int, grace time.Duration) *killer {
	return &killer{pgid: pgid, grace: grace, stop: make(chan struct{}), done: make(chan struct{})}
}

func (k *killer) signal(sig syscall.Signal) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.finished {
		syscall.Kill(-k.pgid, sig)
	}
}

// terminate sends SIGTERM now and SIGKILL after the grace.
func (k *killer) terminate() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.terminating || k.finished {
		return
	}
	k.terminating = true
	syscall.Kill(-k.pgid, syscall.SIGTERM)
	go func() {
		defer close(k.done)
		t := time.NewTimer(k.grace)
		defer t.Stop()
		select {
		case <-t.C:
			k.signal(syscall.SIGKILL)
		case <-k.stop:
		}
	}()
}

// finish ends the killer once the command has been waited for. A command
// that was asked to end takes what is left of its process group with it.
func (k *killer) finish() {
	k.mu.Lock()
	terminating := k.terminating
	if terminating {
		syscall.Kill(-k.pgid, syscall.SIGKILL)
	}
	k.finished = true
	k.mu.Unlock()
	if terminating {
		close(k.stop)
		<-k.done
	}
}
