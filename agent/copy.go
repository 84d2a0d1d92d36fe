package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/agent/internal/copytar"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// The bounds of a copy when CopyLimits leaves them at zero (docs/copy.md).
const (
	// DefaultCopyMaxBytes bounds the file data that CopyFrom writes on the
	// host. Build outputs that CI moves (binaries, test logs, a kernel
	// and its modules, a disk image) fit well within it, and it is less
	// than the free disk of a typical hosted CI runner (about 14 GiB), so
	// that a hostile guest cannot fill the runner's disk.
	DefaultCopyMaxBytes = 8 << 30
	// DefaultCopyMaxEntries bounds the entries (files, directories, links)
	// that CopyFrom creates: ten times a Linux source tree or a large
	// node_modules (about 100,000), while the host's bookkeeping for them
	// (some hundred bytes per new directory) stays small.
	DefaultCopyMaxEntries = 1_000_000
	// DefaultCopyMaxDepth bounds the nesting of directories that CopyFrom
	// creates: deeper than real trees go; CopyFrom holds one open
	// directory per level while it writes.
	DefaultCopyMaxDepth = 256
	// DefaultCopyStartTimeout bounds how long the guest agent may take to
	// answer a copy's request: it answers at once unless it is stuck.
	DefaultCopyStartTimeout = 30 * time.Second
	// DefaultCopyIdleTimeout bounds how long a copy may wait for the guest
	// agent to make progress (send data, take data, or answer at the end).
	DefaultCopyIdleTimeout = 60 * time.Second
)

// CopyOption configures CopyTo and CopyFrom.
type CopyOption interface{ applyCopy(*CopyLimits) }

// CopyLimits bound a copy; it is a CopyOption. A zero field keeps the
// default (the DefaultCopy constants), a negative one removes the bound.
// MaxBytes, MaxEntries and MaxDepth bound what CopyFrom writes on the
// host (the guest trusts what the host sends); the timeouts bound both
// directions.
type CopyLimits struct {
	MaxBytes     int64 // file data, in bytes
	MaxEntries   int64 // files, directories and links, the top one included
	MaxDepth     int   // components of an entry's name, the top one included
	StartTimeout time.Duration
	IdleTimeout  time.Duration
}

func (l CopyLimits) applyCopy(dst *CopyLimits) {
	if l.MaxBytes != 0 {
		dst.MaxBytes = l.MaxBytes
	}
	if l.MaxEntries != 0 {
		dst.MaxEntries = l.MaxEntries
	}
	if l.MaxDepth != 0 {
		dst.MaxDepth = l.MaxDepth
	}
	if l.StartTimeout != 0 {
		dst.StartTimeout = l.StartTimeout
	}
	if l.IdleTimeout != 0 {
		dst.IdleTimeout = l.IdleTimeout
	}
}

func copyLimits(opts []CopyOption) CopyLimits {
	l := CopyLimits{
		MaxBytes:     DefaultCopyMaxBytes,
		MaxEntries:   DefaultCopyMaxEntries,
		MaxDepth:     DefaultCopyMaxDepth,
		StartTimeout: DefaultCopyStartTimeout,
		IdleTimeout:  DefaultCopyIdleTimeout,
	}
	for _, o := range opts {
		if o != nil {
			o.applyCopy(&l)
		}
	}
	return l
}

// ErrCopyBound is what errors.Is finds in the error of a copy stopped by
// one of its bounds: CopyLimits' sizes, or the guest agent's silence.
var ErrCopyBound = errors.New("a copy went past one of its bounds")

type copyBoundError struct {
	msg   string
	cause error
}

func (e *copyBoundError) Error() string        { return e.msg }
func (e *copyBoundError) Unwrap() error        { return e.cause }
func (e *copyBoundError) Is(target error) bool { return target == ErrCopyBound }

// boundHints say, for each bound, how to raise it.
var boundHints = map[string]string{
	copytar.BoundBytes:   "agent.CopyLimits.MaxBytes, or sonix-run cp --max-bytes SIZE",
	copytar.BoundEntries: "agent.CopyLimits.MaxEntries, or sonix-run cp --max-entries N",
	copytar.BoundDepth:   "agent.CopyLimits.MaxDepth, or sonix-run cp --max-depth N",
	"start":              "agent.CopyLimits.StartTimeout, or sonix-run cp --start-timeout DURATION",
	"idle":               "agent.CopyLimits.IdleTimeout, or sonix-run cp --idle-timeout DURATION",
}

func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// watchdog fails a stream's reads and writes once the guest has made no
// progress for a while: armed around each wait for the guest, it sets a
// deadline in the past when it fires (as bindContext does for ctx, so
// neither undoes the other).
type watchdog struct {
	conn  net.Conn
	op    string
	mu    sync.Mutex
	timer *time.Timer
	gen   int
	fired error
}

func newWatchdog(conn net.Conn, op string) *watchdog { return &watchdog{conn: conn, op: op} }

// arm starts the wait: unless disarmed within d, the stream fails with
// the message ("the guest agent ..." and d), naming the bound.
func (w *watchdog) arm(d time.Duration, bound, format string) {
	if d <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fired != nil {
		return
	}
	w.gen++
	gen := w.gen
	w.timer = time.AfterFunc(d, func() {
		w.mu.Lock()
		if w.gen != gen || w.fired != nil {
			w.mu.Unlock()
			return
		}
		msg := fmt.Sprintf("agent: %s: "+format+"; raise the bound with %s", w.op, formatDuration(d), boundHints[bound])
		w.fired = &copyBoundError{msg: msg}
		w.mu.Unlock()
		w.conn.SetDeadline(time.Now())
	})
}

func (w *watchdog) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

// err is the watchdog's error once it has fired.
func (w *watchdog) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

// CopyTo copies the host file or directory hostSrc into the guest, as
// "docker cp SRC NAME:DST" does (docs/copy.md): when guestDst is an
// existing directory, hostSrc goes inside it under its own name (its
// contents, for SRC/.); otherwise guestDst is its new name (its parent
// must exist). Directories are copied whole; permission bits and
// modification times are kept, symbolic links copied as links. The host's
// files are read by handle, never through a link below hostSrc; a named
// pipe, socket or device is an error naming it.
func (c *Client) CopyTo(ctx context.Context, hostSrc, guestDst string, opts ...CopyOption) error {
	lim := copyLimits(opts)
	src, err := copytar.OpenSource(hostSrc)
	if err != nil {
		return fmt.Errorf("agent: put: %w", err)
	}
	defer src.Close()
	req := &wire.Request{Version: wire.Version, Op: wire.OpPut, Put: &wire.PathRequest{Path: wire.ByteString(guestDst)}}
	k, end, err := c.begin(ctx, req)
	if err != nil {
		return err
	}
	defer end()
	wd := newWatchdog(k.conn, "put")
	defer wd.disarm()
	wd.arm(lim.StartTimeout, "start", "the guest agent did not answer the request within %s")
	f, err := k.r.Next()
	wd.disarm()
	if err != nil {
		if werr := wd.err(); werr != nil && ctx.Err() == nil {
			return werr
		}
		return k.fail(ctx, "answering", err)
	}
	switch f.Type {
	case wire.FrameStarted:
		if _, err := wire.DecodeStarted(f.Payload, false); err != nil {
			return fmt.Errorf("agent: put: %v", err)
		}
	case wire.FrameError:
		return k.guestError(f.Payload)
	default:
		return k.unexpected(f, "started or error")
	}
	// The guest may fail before it has read the whole archive; its error
	// frame then comes while the archive is still being written.
	answer := make(chan error, 1)
	go func() {
		f, err := k.r.Next()
		switch {
		case err != nil:
			if werr := wd.err(); werr != nil && ctx.Err() == nil {
				err = werr
			} else {
				err = k.fail(ctx, "the end of the copy", err)
			}
		case f.Type == wire.FrameError:
			err = k.guestError(f.Payload)
		case f.Type != wire.FrameReply:
			err = k.unexpected(f, "a reply")
		}
		if err != nil {
			k.conn.SetWriteDeadline(time.Now()) // stop the archive
		}
		answer <- err
	}()
	// Each frame sent is a wait for the guest, which the watchdog bounds.
	bw := &wire.DataWriter{T: wire.FrameStdin, Send: func(t wire.FrameType, b []byte) error {
		wd.arm(lim.IdleTimeout, "idle", "the guest agent took none of the archive for %s")
		err := k.w.WriteData(t, b)
		wd.disarm()
		if err != nil {
			return &streamWriteError{err}
		}
		return nil
	}}
	werr := src.Write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	if werr == nil {
		wd.arm(lim.IdleTimeout, "idle", "the guest agent took none of the archive for %s")
		if err := k.w.Write(wire.FrameStdinEOF, nil); err != nil {
			werr = &streamWriteError{err}
		}
		wd.disarm()
	} else {
		// Not sending the end of the archive makes the guest fail the put;
		// closing the stream ends the wait for its answer.
		k.conn.Close()
	}
	if werr == nil {
		wd.arm(lim.IdleTimeout, "idle", "the guest agent did not confirm the copy within %s of the archive's end")
	}
	aerr := <-answer
	wd.disarm()
	var sw *streamWriteError
	switch {
	case werr == nil:
		return aerr
	case ctx.Err() != nil:
		return ctx.Err()
	case wd.err() != nil:
		return wd.err()
	case errors.As(werr, &sw) && aerr != nil:
		return aerr // why the stream broke
	case errors.As(werr, &sw):
		return k.fail(ctx, "sending the archive", sw.err)
	}
	return fmt.Errorf("agent: put: %w", werr) // reading the host's files
}

// streamWriteError is a failed write to the stream, as opposed to a
// failure to read the files being archived.
type streamWriteError struct{ err error }

func (e *streamWriteError) Error() string { return e.err.Error() }
func (e *streamWriteError) Unwrap() error { return e.err }

// CopyFrom copies the guest file or directory guestSrc to the host, with
// the same rules as CopyTo (docs/copy.md). The guest's archive is checked
// as hostile input: its top-level entry must be the base name of guestSrc
// (or "." for SRC/.), checked before anything is written; no absolute
// names or ".." components, nothing written through a symbolic link, no
// hard links, no setuid or setgid bits; new files and directories get the
// archive's permission bits less the umask, existing directories keep
// their modes. A new top-level entry appears only once the whole archive
// has arrived. The archive's size, entries and depth are bounded, and the
// guest must answer within a bound and keep sending (CopyLimits).
func (c *Client) CopyFrom(ctx context.Context, guestSrc, hostDst string, opts ...CopyOption) error {
	lim := copyLimits(opts)
	spec, err := copytar.ParseSource(guestSrc)
	if err != nil {
		return fmt.Errorf("agent: get: %w", err)
	}
	dst, err := copytar.OpenDestination(hostDst)
	if err != nil {
		return fmt.Errorf("agent: get: %w", err)
	}
	defer dst.Close()
	req := &wire.Request{Version: wire.Version, Op: wire.OpGet, Get: &wire.PathRequest{Path: wire.ByteString(guestSrc)}}
	k, end, err := c.begin(ctx, req)
	if err != nil {
		return err
	}
	defer end()
	wd := newWatchdog(k.conn, "get")
	defer wd.disarm()
	in := &archiveReader{k: k, ctx: ctx, wd: wd, lim: lim}
	err = dst.Extract(in, copytar.Options{
		Top:        spec.Name,
		TopDir:     spec.Dir,
		MaxBytes:   max(lim.MaxBytes, 0),
		MaxEntries: max(lim.MaxEntries, 0),
		MaxDepth:   max(lim.MaxDepth, 0),
	})
	var le *copytar.LimitError
	switch {
	case in.err != nil:
		return in.err
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &le):
		return &copyBoundError{
			msg:   fmt.Sprintf("agent: get: %v; raise the bound with %s", err, boundHints[le.Bound]),
			cause: err,
		}
	}
	return fmt.Errorf("agent: get: the guest's archive was refused: %w", err)
}

// archiveReader reads the data of stdout frames until the reply, keeping
// the error of the stream or the guest apart from the archive's.
type archiveReader struct {
	k       *call
	ctx     context.Context
	wd      *watchdog
	lim     CopyLimits
	started bool
	buf     []byte
	done    bool
	err     error
}

func (a *archiveReader) Read(p []byte) (int, error) {
	for len(a.buf) == 0 {
		if a.done {
			return 0, io.EOF
		}
		if a.err != nil {
			return 0, a.err
		}
		if a.started {
			a.wd.arm(a.lim.IdleTimeout, "idle", "the guest agent sent nothing for %s")
		} else {
			a.wd.arm(a.lim.StartTimeout, "start", "the guest agent did not answer the request within %s")
		}
		f, err := a.k.r.Next()
		a.wd.disarm()
		a.started = true
		switch {
		case err != nil:
			if werr := a.wd.err(); werr != nil && a.ctx.Err() == nil {
				a.err = werr
			} else {
				a.err = a.k.fail(a.ctx, "the end of the archive", err)
			}
		case f.Type == wire.FrameStdout:
			a.buf = f.Payload
		case f.Type == wire.FrameReply:
			a.done = true
		case f.Type == wire.FrameError:
			a.err = a.k.guestError(f.Payload)
		default:
			a.err = a.k.unexpected(f, "archive data or a reply")
		}
	}
	n := copy(p, a.buf)
	a.buf = a.buf[n:]
	return n, nil
}
