package transport

import (
	"bytes"
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

// LinkOptions configure a Link.
type LinkOptions struct {
	// KeepAliveInterval is how often the host pings the guest agent while
	// a session is live, so that an agent that went away is noticed even
	// when no operation runs; 0 means DefaultKeepAliveInterval.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout is how long a ping (or any frame the host sends)
	// may wait for the guest before the session is given up; 0 means
	// DefaultKeepAliveTimeout.
	KeepAliveTimeout time.Duration
	// GoneWait is how long an operation waits for a new agent once the
	// port has closed after a session (see PortOpen); 0 means
	// DefaultGoneWait.
	GoneWait time.Duration
	// Logf, when set, gets one line per event of the link (a session
	// starts or ends).
	Logf func(format string, args ...any)
}

// Link is the host's end of the agent's port (docs/protocol.md,
// "Transport"). It waits for the guest agent's preamble, answers it, and
// runs a yamux client session; when the agent restarts (a new preamble),
// its port closes (PortOpen) or it stops answering, it fails that
// session's operations at once and waits for the next agent on the same
// connection. It sends nothing until an agent has announced itself. Its
// Dial opens one stream per operation; several operations may run at once.
type Link struct {
	conn io.ReadWriteCloser
	opts LinkOptions

	mu       sync.Mutex
	cur      *session // the live session; nil while waiting for an agent
	refused  error    // why the latest preamble cannot be served
	final    *SessionError
	changed  chan struct{} // closed and replaced when cur, refused, final or the port change
	closed   bool          // no goroutine may start any more
	resync   bool          // the control writer owes the resync line
	ack      *session      // the control writer owes this session's answer
	wake     chan struct{} // wakes the control writer
	sessions int           // sessions started so far
	port     portState     // what PortOpen last said
	portAt   time.Time     // when the port closed (the host's clock)
	gone     *SessionError // why the last session ended when the port closed

	done    chan struct{} // closed once final is set
	writeMu sync.Mutex    // one write to conn at a time: frames and lines whole
	chunks  chan chunk    // what the port reader read
	free    chan []byte   // buffers back to the port reader
	wg      sync.WaitGroup
}

// portState is what the link knows of the guest's side of the port.
type portState int

const (
	portUnknown portState = iota // no PortOpen yet: nobody tells (vz)
	portOpen
	portClosed
)

// portReadSize is how much the link reads from the port at once: a data
// frame's worth, so that the host, which shares the machine with QEMU's
// emulation, spends few calls on a transfer.
const portReadSize = 256 << 10

type chunk struct {
	buf []byte
	n   int
	err error
}

// NewLink starts the host's end over conn, the host side of the agent's
// port (for QEMU, the port's Unix socket). The guest agent need not be
// running yet. Close ends the link and closes conn.
func NewLink(conn io.ReadWriteCloser, opts LinkOptions) *Link {
	if opts.KeepAliveInterval <= 0 {
		opts.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if opts.KeepAliveTimeout <= 0 {
		opts.KeepAliveTimeout = DefaultKeepAliveTimeout
	}
	if opts.GoneWait <= 0 {
		opts.GoneWait = DefaultGoneWait
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	l := &Link{
		conn:    conn,
		opts:    opts,
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		chunks:  make(chan chunk),
		free:    make(chan []byte, 2),
	}
	// Two buffers: one being read into, one being taken apart.
	l.free <- make([]byte, portReadSize)
	l.free <- make([]byte, portReadSize)
	l.wg.Add(3)
	go l.readPort()
	go l.run()
	go l.writeControl()
	return l
}

// Done is closed when the link has ended for good: Close, the port's
// connection failed, or the guest broke the protocol inside a session.
// A restarting guest agent does not end it.
func (l *Link) Done() <-chan struct{} { return l.done }

// Err is nil while the link runs, then why it ended.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.final == nil {
		return nil
	}
	return l.final
}

// Close ends the link: every stream ends, pending operations return
// ErrLinkClosed, conn is closed.
func (l *Link) Close() error {
	l.fail(&SessionError{"agent: the agent link was closed", ErrLinkClosed})
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	err := l.conn.Close()
	l.wg.Wait()
	return err
}

// Dial opens a new stream to the guest agent; it is a Dialer. It waits,
// bounded by ctx, until an agent has announced itself. It fails at once
// when the link has ended, or when the latest agent speaks another
// protocol version; and, once the port has closed after a session (see
// PortOpen), when no new agent announces itself within GoneWait.
func (l *Link) Dial(ctx context.Context) (net.Conn, error) {
	var goneTimer *time.Timer
	defer func() {
		if goneTimer != nil {
			goneTimer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l.mu.Lock()
		final, refused, s, changed := l.final, l.refused, l.cur, l.changed
		var goneLeft time.Duration
		var gone *SessionError
		if s == nil && l.port == portClosed && l.sessions > 0 {
			gone = l.gone
			goneLeft = time.Until(l.portAt.Add(l.opts.GoneWait))
		}
		l.mu.Unlock()
		switch {
		case final != nil:
			return nil, final
		case refused != nil:
			return nil, refused
		case s != nil:
			c, err := s.open(ctx)
			if err == nil || ctx.Err() != nil {
				return c, err
			}
			select {
			case <-s.ended:
				continue // opened on a session that just ended: wait for the next
			default:
			}
			return nil, err
		case gone != nil && goneLeft <= 0:
			return nil, gone
		}
		var goneC <-chan time.Time
		if gone != nil {
			if goneTimer == nil {
				goneTimer = time.NewTimer(goneLeft)
			} else {
				goneTimer.Reset(goneLeft)
			}
			goneC = goneTimer.C
		}
		select {
		case <-changed:
		case <-goneC:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// PortOpen tells the link that the guest's side of the port opened (true)
// or closed (false). It is for whoever can see the guest's side: with
// QEMU, the QMP event VSERPORT_CHANGE of the agent's port (its socket
// sees no end of file when the agent dies, and a new agent is on the same
// connection). Without it (vz) the keepalive is how an agent that has gone
// is noticed.
//
// When the port closes, the live session ends at once, failing its
// operations with ErrAgentGone; until a new agent announces itself, Dial
// waits at most GoneWait and then fails with ErrAgentGone (but before any
// session has existed, while the guest boots, Dial waits as before). When
// it opens, the next preamble starts a session that Dial uses at once.
//
// It is PortOpenAt with the time of the call: call it as soon as the event
// arrives, or use PortOpenAt with the event's own time.
func (l *Link) PortOpen(open bool) { l.PortOpenAt(open, time.Now()) }

// PortOpenAt is PortOpen for an event that happened at a known time (QMP
// events carry the time QEMU emitted them). A close ends the live session
// only if that session's preamble arrived before the close: a preamble
// read after it is a newer agent's, whose own open event may not have
// been delivered yet.
func (l *Link) PortOpenAt(open bool, at time.Time) {
	l.mu.Lock()
	if l.final != nil {
		l.mu.Unlock()
		return
	}
	if open {
		l.port = portOpen
		l.notifyLocked()
		l.mu.Unlock()
		return
	}
	s := l.cur
	if s != nil && !s.announced.Before(at) {
		// The live session's agent opened the port after this close.
		l.mu.Unlock()
		return
	}
	gone := &SessionError{"agent: the guest agent's port closed (the agent stopped, or was killed); no agent has opened it again", ErrAgentGone}
	l.port = portClosed
	l.portAt = time.Now()
	l.gone = gone
	if s != nil {
		if s.reason == nil {
			s.reason = gone
		}
		l.cur = nil
		// Should the agent still be there after all, the resync line
		// makes it start a new session; a gone one never reads it, and
		// its successor skips it.
		l.resync = true
	}
	l.notifyLocked()
	l.mu.Unlock()
	if s != nil {
		s.stop(true)
		l.wakeWriter()
		l.opts.Logf("%v", gone)
	}
}

// goroutine starts f unless the link is closed.
func (l *Link) goroutine(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
	return true
}

// notifyLocked wakes the Dial calls that wait for a change.
func (l *Link) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *Link) wakeWriter() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// fail ends the link for good with e (the first reason wins) and the live
// session with it.
func (l *Link) fail(e *SessionError) {
	l.mu.Lock()
	if l.final != nil {
		l.mu.Unlock()
		return
	}
	l.final = e
	close(l.done)
	s := l.cur
	l.cur = nil
	if s != nil && s.reason == nil {
		s.reason = e
	}
	l.notifyLocked()
	l.mu.Unlock()
	if s != nil {
		s.stop(false)
	}
	l.opts.Logf("%v", e)
}

func (l *Link) failed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// readPort reads the port and hands what it read to run: run never blocks
// on the port, and so always hears of a session's end.
func (l *Link) readPort() {
	defer l.wg.Done()
	for {
		var buf []byte
		select {
		case buf = <-l.free:
		case <-l.done:
			return
		}
		n, err := l.conn.Read(buf)
		select {
		case l.chunks <- chunk{buf, n, err}:
		case <-l.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// portError is the link's end when its connection fails: the VM has
// ended (QEMU closed the port's socket) unless the error says otherwise.
func portError(doing string, err error) *SessionError {
	switch {
	case errors.Is(err, io.EOF):
		return &SessionError{"agent: the agent's port closed (the VM ended)", errors.Join(ErrVMEnded, err)}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrClosedPipe):
		return &SessionError{fmt.Sprintf("agent: %s the agent's port: %v (the VM ended)", doing, err), errors.Join(ErrVMEnded, err)}
	}
	return &SessionError{fmt.Sprintf("agent: %s the agent's port: %v", doing, err), err}
}

// reading is run's state: where the port's byte stream stands.
type reading struct {
	scan    *LineScanner // while no session is live
	live    *session     // the session being fed
	tracker FrameTracker // live's frames
	tail    []byte       // the last bytes fed to live
	line    []byte       // non-nil: a line starting at a frame boundary of live
}

// tailSize bounds what is kept of a session's last bytes: enough for a
// preamble that an agent killed mid-frame left inside a frame's body.
const tailSize = 2 * MaxLine

func newScanner() *LineScanner {
	return NewLineScanner(AgentMagic, func(line []byte) bool {
		_, err := ParseLine(line, AgentMagic)
		return err == nil
	})
}

// run follows the port's byte stream: preambles, then each session's
// frames, which it feeds to that session's yamux.
func (l *Link) run() {
	defer l.wg.Done()
	r := &reading{scan: newScanner()}
	for {
		var ended <-chan struct{}
		if r.live != nil {
			ended = r.live.ended
		}
		select {
		case c := <-l.chunks:
			l.consume(r, c.buf[:c.n])
			l.free <- c.buf
			if c.err != nil {
				l.fail(portError("reading", c.err))
			}
		case <-ended:
			l.liveEnded(r, 0)
		case <-l.done:
		}
		if l.failed() {
			if r.live != nil {
				r.live.stop(false)
			}
			return
		}
	}
}

// consume takes bytes from the port.
func (l *Link) consume(r *reading, p []byte) {
	for len(p) > 0 && !l.failed() {
		if r.live == nil {
			line, rest, ok := r.scan.Feed(p)
			if !ok {
				return
			}
			l.preamble(r, line)
			p = rest
			continue
		}
		select {
		case <-r.live.ended:
			l.liveEnded(r, 0)
			continue
		default:
		}
		if r.line != nil {
			p = l.boundaryLine(r, p)
			continue
		}
		k, stopped := r.tracker.Advance(p)
		if k > 0 {
			n, err := r.live.in.Write(p[:k])
			r.keepTail(p[:n])
			p = p[n:]
			if err != nil {
				// yamux has ended: wait for why, then go on with what
				// it did not take.
				select {
				case <-r.live.ended:
					l.liveEnded(r, k-n)
				case <-l.done:
				}
				continue
			}
		}
		if err := r.tracker.Err(); err != nil {
			l.fail(&SessionError{"agent: the guest broke the protocol: " + err.Error(), ErrProtocol})
			return
		}
		if stopped {
			r.line = []byte{}
		}
	}
}

func (r *reading) keepTail(p []byte) {
	r.tail = append(r.tail, p...)
	if len(r.tail) > tailSize {
		r.tail = append(r.tail[:0], r.tail[len(r.tail)-tailSize:]...)
	}
}

// liveEnded goes back to waiting for a preamble after the live session
// ended by itself (the agent stopped answering). A preamble may already
// be inside the frame being read: an agent killed in the middle of a
// frame, and the next one's preamble taken for the rest of that frame.
//
// untaken is how many of the bytes the tracker has counted yamux did not
// take (they are read again after).
func (l *Link) liveEnded(r *reading, untaken int) {
	inFrame := min(max(r.tracker.InFrame()-untaken, 0), len(r.tail))
	torn := append([]byte(nil), r.tail[len(r.tail)-inFrame:]...)
	*r = reading{scan: newScanner()}
	l.consume(r, torn)
}

// boundaryLine collects a line that starts where a frame should have: it
// must be a preamble (the agent restarted). Anything else inside a session
// is a protocol violation. It returns what follows the line.
func (l *Link) boundaryLine(r *reading, p []byte) []byte {
	take := p
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		take = p[:i+1]
	}
	take = take[:min(len(take), MaxLine-len(r.line))]
	r.line = append(r.line, take...)
	rest := p[len(take):]
	n := min(len(r.line), len(AgentMagic))
	complete := r.line[len(r.line)-1] == '\n'
	var err error
	switch {
	case !bytes.Equal(r.line[:n], []byte(AgentMagic[:n])):
		err = errors.New("not yamux")
	case !complete && len(r.line) < MaxLine:
		return rest
	case !complete:
		err = fmt.Errorf("a line longer than %d bytes", MaxLine)
	default:
		_, err = ParseLine(r.line[:len(r.line)-1], AgentMagic)
	}
	if err != nil {
		shown := append(r.line, rest[:min(len(rest), 32)]...)
		l.fail(&SessionError{
			fmt.Sprintf("agent: the guest broke the protocol: bytes where a yamux frame should start: %q (%v)", shown[:min(len(shown), 48)], err),
			ErrProtocol,
		})
		return nil
	}
	l.preamble(r, r.line[:len(r.line)-1])
	return rest
}

// preamble starts a session for a new agent's preamble, ending the live
// one: its agent has gone.
func (l *Link) preamble(r *reading, line []byte) {
	pl, _ := ParseLine(line, AgentMagic) // the scanner took only good lines
	if old := r.live; old != nil {
		l.mu.Lock()
		if old.reason == nil {
			old.reason = &SessionError{"agent: the guest agent restarted", ErrAgentRestarted}
		}
		if l.cur == old {
			l.cur = nil
			l.notifyLocked()
		}
		l.mu.Unlock()
		// yamux takes what it was sent first: a reply that came just
		// before the restart still reaches its operation.
		old.stop(true)
		l.opts.Logf("agent: the guest agent restarted")
	}
	*r = reading{scan: newScanner()}
	if pl.Version != wire.Version {
		err := &SessionError{
			fmt.Sprintf("agent: the guest agent speaks protocol version %d; this host speaks %d (the guest system's sonix-run-agent and this sonix-run must match)", pl.Version, wire.Version),
			ErrVersion,
		}
		l.mu.Lock()
		l.refused = err
		l.notifyLocked()
		l.mu.Unlock()
		l.opts.Logf("%v", err)
		return
	}
	s := l.newSession(pl.Token)
	if s == nil {
		return
	}
	r.live = s
	r.tracker.Refuse = RefuseHostBound
	l.opts.Logf("agent: session %s started", pl.Token)
}

// writeControl writes the host's lines, in order: the resync line, then
// the answer to the latest preamble.
func (l *Link) writeControl() {
	defer l.wg.Done()
	for {
		select {
		case <-l.wake:
		case <-l.done:
			return
		}
		l.mu.Lock()
		resync, ack := l.resync, l.ack
		l.resync, l.ack = false, nil
		l.mu.Unlock()
		var b []byte
		if resync {
			b = append(b, HostResync()...)
		}
		if ack != nil {
			b = append(b, HostAck(ack.id)...)
		}
		if len(b) == 0 {
			continue
		}
		l.writeMu.Lock()
		_, err := l.conn.Write(b)
		l.writeMu.Unlock()
		if err != nil {
			l.fail(portError("writing", err))
			return
		}
		if ack != nil {
			close(ack.acked)
		}
	}
}
