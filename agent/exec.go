package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// killSlack is how long, beyond the command's kill grace, Exec waits for
// the exit status of a command it asked to end before it gives up on the
// stream.
const killSlack = 2 * time.Second

// WinSize is a terminal size.
type WinSize = wire.WinSize

// Command is what to run in the guest.
type Command struct {
	// Argv is the program and its arguments, run directly (no shell); the
	// program is looked up on the guest's PATH unless it holds a slash.
	// Exactly one of Argv and Shell is set.
	Argv []string
	// Shell is a command line run with "sh -c".
	Shell string
	// Env holds KEY=VALUE entries added to the guest's base environment
	// (PATH, HOME, USER, LOGNAME, SHELL; TERM with TTY); later entries win.
	Env []string
	// Dir is the working directory, an absolute guest path ("" is /).
	Dir string
	// User is NAME, UID, NAME:GROUP or UID:GID ("" is the agent's user,
	// root).
	User string
	// TTY runs the command on a pseudo-terminal of Rows x Cols (0: 24x80):
	// its stdin, stdout and stderr, and its controlling terminal. Its
	// output all arrives on Stdout.
	TTY        bool
	Rows, Cols uint16
	// KillGrace is how long the command has between SIGTERM and SIGKILL
	// when it is ended (ctx cancelled, stream or session gone); 0 is 5 s,
	// at most 5 min.
	KillGrace time.Duration
}

// Stdio connects a command's streams.
//
// Stdin is streamed with back-pressure; nil means /dev/null (with TTY: no
// input). Its io.EOF sends the end of input (with TTY: the terminal's EOF
// character). When the command ends first, a Read of Stdin still in
// progress is stopped with SetReadDeadline(now) if Stdin has that method
// and it works (net.Conn, os.Pipe ends, files Go opened itself such as
// os.OpenFile("/dev/tty")), and Exec waits for it, then clears the
// deadline. Otherwise (os.Stdin in blocking mode, io.Pipe) Exec does not
// wait for that Read: the goroutine doing it ends when the Read returns,
// and what it read is dropped. That is the only goroutine Exec may leave.
//
// Stdout and Stderr get the output as it comes (nil discards it). A Write
// that fails because its reader went away (syscall.EPIPE, io.ErrClosedPipe)
// is the reader's choice, as in a shell pipeline: the guest closes that
// output of the command, which gets EPIPE (SIGPIPE) there as it would
// locally, the other output goes on, and Exec returns the command's
// status. A Write that fails otherwise ends the command, and Exec returns
// that error. They must not block forever. Resize changes the terminal
// size (TTY only); Signal delivers Linux signal numbers (1-64) to the
// command's process group.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan WinSize
	Signal         <-chan int
}

func (cmd *Command) request(stdin bool) (*wire.Request, error) {
	if cmd.KillGrace < 0 || cmd.KillGrace > wire.MaxKillWait {
		return nil, fmt.Errorf("kill grace %v out of range (0-%v)", cmd.KillGrace, wire.MaxKillWait)
	}
	grace := cmd.KillGrace.Milliseconds()
	if cmd.KillGrace > 0 && grace == 0 {
		grace = 1
	}
	return &wire.Request{Version: wire.Version, Op: wire.OpExec, Exec: &wire.ExecRequest{
		Argv: wire.ByteStrings(cmd.Argv), Shell: wire.ByteString(cmd.Shell), Env: wire.ByteStrings(cmd.Env),
		Dir: wire.ByteString(cmd.Dir), User: cmd.User,
		Stdin: stdin, TTY: cmd.TTY, Rows: cmd.Rows, Cols: cmd.Cols, KillGraceMillis: grace,
	}}, nil
}

// Exec runs cmd in the guest and returns its exit status: 0-255, 128+N
// for a command killed by signal N. A command that could not start
// returns the shell's status for it (125, 126, 127) with a *GuestError.
//
// When ctx ends while the command runs, the guest ends it (SIGTERM, then
// SIGKILL after cmd.KillGrace); Exec waits for that up to the grace and 2
// s more, then returns ctx.Err(). The session stays usable. When the
// session ends first, Exec returns its *SessionError (ErrAgentGone,
// ErrAgentRestarted, ErrAgentSilent; ErrVMEnded or ErrLinkClosed when the
// VM or the link ended), which also matches ErrStatusUnknown when the
// command had started.
//
// The command's standard input, when there is one, goes on a stream of its
// own (docs/protocol.md, "exec"), opened once Stdin has given data, so that
// signals, resizes and the end of the command are never held up behind
// input the command does not read.
//
// Exec returns once every goroutine it started has ended (but see Stdio
// about a Stdin that cannot be interrupted).
func (c *Client) Exec(ctx context.Context, cmd Command, stdio Stdio) (int, error) {
	req, err := cmd.request(stdio.Stdin != nil)
	if err != nil {
		return -1, fmt.Errorf("agent: exec: %v", err)
	}
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	k, err := c.open(ctx, req)
	if err != nil {
		return -1, err
	}
	defer k.conn.Close()
	x := &execCall{
		call:    k,
		client:  c,
		cmd:     &cmd,
		stdio:   stdio,
		grace:   req.Exec.KillGrace(),
		control: newControlQueue(),
		done:    make(chan struct{}),
	}
	if x.stdio.Stdout == nil {
		x.stdio.Stdout = io.Discard
	}
	if x.stdio.Stderr == nil {
		x.stdio.Stderr = io.Discard
	}
	return x.run(ctx)
}

type execCall struct {
	*call
	client  *Client
	cmd     *Command
	stdio   Stdio
	grace   time.Duration
	control *controlQueue
	id      uint32 // the guest's id of the command, for its stdin stream

	done        chan struct{} // closed once the exit status (or the end) is in
	outputErr   error         // set by readFrames before it returns
	interrupted bool          // Stdin's Read was stopped with a deadline

	stdinMu     sync.Mutex
	stdinConn   net.Conn // the stdin stream, once opened
	stdinClosed bool     // run no longer lets one open
}

type execResult struct {
	status int
	err    error
}

// stdinChunk is a piece of stdin (in buf[wire.HeaderSize:]), or its end.
type stdinChunk struct {
	buf []byte
	eof bool
}

// stdinBuffers is how many buffers Stdin is read into: one being read,
// one being sent.
const stdinBuffers = 2

func (x *execCall) run(ctx context.Context) (int, error) {
	// Until the command has started, ctx's end simply closes the stream:
	// the guest ends a command whose stream is gone.
	unbind := bindContext(ctx, x.conn)
	err := x.sendRequest(ctx)
	var f wire.Frame
	if err == nil {
		f, err = x.answer(ctx, "starting the command")
	}
	unbind()
	if err != nil {
		return -1, err
	}
	x.conn.SetDeadline(time.Time{})
	switch f.Type {
	case wire.FrameStarted:
		if x.id, err = wire.DecodeStarted(f.Payload, true); err != nil {
			return -1, fmt.Errorf("agent: exec: %v", err)
		}
	case wire.FrameError:
		err := x.guestError(f.Payload)
		var g *GuestError
		if errors.As(err, &g) && g.Status != 0 {
			return g.Status, err
		}
		return -1, err
	default:
		return -1, x.unexpected(f, "started or error")
	}

	results := make(chan execResult, 1)
	chunks := make(chan stdinChunk)
	free := make(chan []byte, stdinBuffers)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		results <- x.readFrames()
	}()
	go func() {
		defer wg.Done()
		x.sendControl()
	}()
	stdinResult := make(chan error, 1)
	if x.stdio.Stdin != nil {
		for range stdinBuffers {
			free <- make([]byte, wire.HeaderSize+wire.MaxData)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.sendStdin(ctx, chunks, free)
		}()
		go func() { stdinResult <- x.readStdin(chunks, free) }()
	} else {
		stdinResult <- nil
	}

	var (
		res       execResult
		cancelled bool
		ctxDone   = ctx.Done()
		giveUp    <-chan time.Time
		resize    = x.stdio.Resize
		signals   = x.stdio.Signal
	)
wait:
	for {
		select {
		case res = <-results:
			break wait
		case <-ctxDone:
			ctxDone, cancelled = nil, true
			x.control.push(wire.FrameKill, nil)
			t := time.NewTimer(x.grace + killSlack)
			defer t.Stop()
			giveUp = t.C
		case <-giveUp:
			giveUp = nil
			// The exit status did not come: stop reading, which ends
			// readFrames.
			x.conn.SetReadDeadline(time.Now())
		case ws, ok := <-resize:
			if !ok {
				resize = nil
			} else if b, err := ws.Encode(); err == nil && x.cmd.TTY {
				x.control.push(wire.FrameResize, b)
			}
		case sig, ok := <-signals:
			if !ok {
				signals = nil
			} else if b, err := wire.EncodeSignal(sig); err == nil {
				x.control.push(wire.FrameSignal, b)
			}
		}
	}
	close(x.done)
	x.conn.SetWriteDeadline(time.Now())
	x.closeStdinStream()
	wg.Wait()
	var stdinErr error
	if x.stopStdin() {
		stdinErr = <-stdinResult
		x.clearStdinDeadline()
		if x.interrupted && isTimeout(stdinErr) {
			stdinErr = nil
		}
	} else {
		// Left to end with its Read; see Stdio.
		select {
		case stdinErr = <-stdinResult:
		default:
		}
	}
	if cancelled {
		return -1, ctx.Err()
	}
	if res.err != nil {
		if SessionEndOf(res.err) != "" && !errors.Is(res.err, ErrStatusUnknown) {
			return -1, &statusUnknown{res.err}
		}
		return res.status, res.err
	}
	if x.outputErr != nil {
		return res.status, fmt.Errorf("agent: exec: writing the command's output: %w", x.outputErr)
	}
	if stdinErr != nil {
		return res.status, fmt.Errorf("agent: exec: reading stdin: %w", stdinErr)
	}
	return res.status, nil
}

// ErrStatusUnknown: the command started, but its session ended (the VM
// ended, the agent stopped or restarted) before its exit status came;
// what the command did is unknown. Exec's error then also matches the
// session's end (ErrAgentGone, ErrVMEnded, ...).
var ErrStatusUnknown = errors.New("the command's exit status is unknown")

type statusUnknown struct{ err error }

func (e *statusUnknown) Error() string {
	if errors.Is(e.err, errStreamClosed) {
		return e.err.Error()
	}
	return e.err.Error() + "; the command's exit status is unknown"
}

var errStreamClosed = errors.New("agent: exec: the stream closed before the command's exit status came (the guest agent or the VM ended)")

func (e *statusUnknown) Unwrap() []error { return []error{ErrStatusUnknown, e.err} }

// readerGone says whether a write failed because its reader went away (a
// closed pipe), which is the reader's choice rather than a failure.
func readerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe)
}

// readFrames reads the guest's frames until the exit status.
func (x *execCall) readFrames() execResult {
	fail := func(err error) execResult {
		return execResult{-1, x.fail(context.Background(), "the exit status", err)}
	}
	var closed [3]bool // by output: its reader went away
	for {
		f, err := x.r.Next()
		if err == io.EOF {
			// No exit status will come: the agent, or the host between
			// (a control socket whose VM is ending), went away.
			return execResult{-1, &statusUnknown{errStreamClosed}}
		}
		if err != nil {
			return fail(err)
		}
		switch f.Type {
		case wire.FrameStdout, wire.FrameStderr:
			out, w := wire.OutputStdout, x.stdio.Stdout
			if f.Type == wire.FrameStderr {
				if x.cmd.TTY {
					return execResult{-1, errors.New("agent: stream: unexpected stderr frame from a command on a terminal")}
				}
				out, w = wire.OutputStderr, x.stdio.Stderr
			}
			if x.outputErr != nil || closed[out] {
				continue
			}
			if _, err := w.Write(f.Payload); err != nil {
				if readerGone(err) {
					// Like a shell pipeline's reader going away: the
					// command's next write there fails, as it would
					// locally; what is on its way is dropped.
					closed[out] = true
					x.control.push(wire.FrameCloseOutput, []byte{byte(out)})
					continue
				}
				// The command is ended; its remaining output is dropped.
				x.outputErr = err
				x.control.push(wire.FrameKill, nil)
			}
		case wire.FrameExit:
			e, err := wire.DecodeExit(f.Payload)
			if err != nil {
				return execResult{-1, fmt.Errorf("agent: exec: %v", err)}
			}
			return execResult{e.Status, nil}
		case wire.FrameError:
			return execResult{-1, x.guestError(f.Payload)}
		default:
			return execResult{-1, x.unexpected(f, "output or the exit status")}
		}
	}
}

// sendControl writes the control frames (kill, signal, resize, the end of
// stdin, an output closed) on the command's stream as they come.
func (x *execCall) sendControl() {
	for {
		// A failed write means the stream is broken; readFrames sees that.
		if t, p, ok := x.control.pop(); ok {
			if x.w.Write(t, p) != nil {
				return
			}
			continue
		}
		select {
		case <-x.control.ready:
		case <-x.done:
			return
		}
	}
}

// sendStdin sends what readStdin read on the command's stdin stream,
// opened with the first data; input that ends before any data is a
// close-stdin frame instead. It stops when the command ends or the stream
// breaks (the guest stops taking input when the command has ended).
func (x *execCall) sendStdin(ctx context.Context, chunks <-chan stdinChunk, free chan<- []byte) {
	var w *wire.Writer
	for {
		var c stdinChunk
		select {
		case c = <-chunks:
		case <-x.done:
			return
		}
		if c.eof {
			if w == nil {
				x.control.push(wire.FrameCloseStdin, nil)
			} else {
				w.Write(wire.FrameStdinEOF, nil)
			}
			return
		}
		if w == nil {
			if w = x.openStdin(ctx); w == nil {
				return
			}
		}
		if w.WriteData(wire.FrameStdin, c.buf) != nil {
			return
		}
		free <- c.buf[:cap(c.buf)]
	}
}

// openStdin opens the command's stdin stream; nil when it cannot (the
// command has ended, or the session: the command's stream says which).
func (x *execCall) openStdin(ctx context.Context) *wire.Writer {
	req, err := wire.EncodeRequest(&wire.Request{Version: wire.Version, Op: wire.OpStdin, Stdin: &wire.StdinRequest{Exec: x.id}})
	if err != nil {
		return nil
	}
	conn, err := x.client.dial(ctx)
	if err != nil {
		return nil
	}
	x.stdinMu.Lock()
	if x.stdinClosed {
		x.stdinMu.Unlock()
		conn.Close()
		return nil
	}
	x.stdinConn = conn
	x.stdinMu.Unlock()
	w := wire.NewWriter(conn)
	if w.Write(wire.FrameRequest, req) != nil {
		return nil
	}
	return w
}

// closeStdinStream closes the stdin stream, which stops a write to it
// that waits for the guest, and keeps one from being opened.
func (x *execCall) closeStdinStream() {
	x.stdinMu.Lock()
	defer x.stdinMu.Unlock()
	x.stdinClosed = true
	if x.stdinConn != nil {
		x.stdinConn.SetWriteDeadline(time.Now())
		x.stdinConn.Close()
	}
}

// readStdin reads Stdin in chunks for sendStdin until its end, and returns
// the error that ended it (nil for io.EOF or the end of the command).
func (x *execCall) readStdin(out chan<- stdinChunk, free <-chan []byte) error {
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-x.done:
			return nil
		}
		n, err := x.stdio.Stdin.Read(buf[wire.HeaderSize:])
		if n > 0 {
			select {
			case out <- stdinChunk{buf: buf[:wire.HeaderSize+n]}:
			case <-x.done:
				return nil
			}
		}
		if err != nil {
			select {
			case out <- stdinChunk{eof: true}:
			case <-x.done:
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

type readDeadliner interface {
	SetReadDeadline(time.Time) error
}

// stopStdin stops a Read of Stdin in progress, if Stdin allows that, and
// says whether readStdin can be waited for.
func (x *execCall) stopStdin() bool {
	if x.stdio.Stdin == nil {
		return true
	}
	d, ok := x.stdio.Stdin.(readDeadliner)
	if !ok || d.SetReadDeadline(time.Now()) != nil {
		return false
	}
	x.interrupted = true
	return true
}

func (x *execCall) clearStdinDeadline() {
	if d, ok := x.stdio.Stdin.(readDeadliner); ok && x.interrupted {
		d.SetReadDeadline(time.Time{})
	}
}

// controlQueue holds control frames for sendControl; a newer resize
// replaces one not yet sent, and kill and each close are sent once.
type controlQueue struct {
	mu     sync.Mutex
	frames []wire.Frame
	ready  chan struct{}
}

func newControlQueue() *controlQueue { return &controlQueue{ready: make(chan struct{}, 1)} }

func (q *controlQueue) push(t wire.FrameType, p []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, f := range q.frames {
		if f.Type == t && (t == wire.FrameResize || t == wire.FrameKill || t == wire.FrameCloseStdin) {
			q.frames[i].Payload = p
			return
		}
	}
	q.frames = append(q.frames, wire.Frame{Type: t, Payload: p})
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *controlQueue) pop() (wire.FrameType, []byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) == 0 {
		return 0, nil, false
	}
	f := q.frames[0]
	q.frames = q.frames[1:]
	return f.Type, f.Payload, true
}
