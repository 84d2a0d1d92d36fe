package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// session is one yamux client session with one run of the guest agent,
// from its preamble to its end. Link feeds it the port's bytes through a
// pipe and writes its frames to the port whole.
type session struct {
	l  *Link
	id string // the preamble's
	ys *yamux.Session
	fw *FrameWriter

	in  *io.PipeWriter // Link.run feeds yamux here
	out *io.PipeReader // yamux reads here

	acked     chan struct{} // closed once the answer to the preamble is on the wire
	dead      chan struct{} // closed when the session is over: nothing more is written
	deadOnce  sync.Once
	ended     chan struct{} // closed once yamux has ended and reason is set
	reason    *SessionError // under l.mu until ended is closed
	announced time.Time     // when its preamble arrived
}

var errSessionOver = errors.New("the session is over")

// newSession starts a session for the preamble with this id, makes it the
// live one and has its answer written; nil if the link has ended.
func (l *Link) newSession(id string) *session {
	pr, pw := io.Pipe()
	s := &session{
		l: l, id: id, in: pw, out: pr,
		acked: make(chan struct{}), dead: make(chan struct{}), ended: make(chan struct{}),
		announced: time.Now(),
	}
	s.fw = NewFrameWriter(s.writeFrame, 0)
	cfg := YamuxConfig()
	// Only the host pings, and only a live session: the agent has
	// announced itself, so it can answer. The timeout is long enough for
	// a guest that is merely slow.
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = l.opts.KeepAliveInterval
	cfg.ConnectionWriteTimeout = l.opts.KeepAliveTimeout
	ys, err := yamux.Client(s, cfg)
	if err != nil {
		l.fail(&SessionError{"agent: starting a session: " + err.Error(), err})
		return nil
	}
	s.ys = ys
	l.mu.Lock()
	if l.final != nil {
		l.mu.Unlock()
		s.stop(false)
		ys.Close()
		return nil
	}
	l.cur = s
	l.refused = nil
	l.ack = s
	l.sessions++
	l.port = portOpen // a preamble came through it
	l.gone = nil
	l.notifyLocked()
	l.mu.Unlock()
	l.wakeWriter()
	if !l.goroutine(func() { l.watch(s) }) {
		s.stop(false)
		ys.Close()
		return nil
	}
	return s
}

// stop ends the session from the link's side: nothing more is written,
// and yamux reads the end of its input, after what it was already sent
// when drain is set.
func (s *session) stop(drain bool) {
	s.deadOnce.Do(func() { close(s.dead) })
	if drain {
		s.in.Close()
	} else {
		s.in.CloseWithError(errSessionOver)
	}
}

// watch waits for the end of the session and keeps its reason. The guest
// never opens streams; one that does breaks the protocol.
func (l *Link) watch(s *session) {
	for {
		st, err := s.ys.AcceptStream()
		if err == nil {
			st.Close()
			l.fail(&SessionError{"agent: the guest broke the protocol: it opened a stream, which only the host does", ErrProtocol})
			continue
		}
		l.mu.Lock()
		terminal := false
		if s.reason == nil {
			if errors.Is(err, yamux.ErrKeepAliveTimeout) {
				s.reason = &SessionError{
					fmt.Sprintf("agent: the guest agent stopped answering (nothing for %v); its session was given up", l.opts.KeepAliveTimeout),
					ErrAgentSilent,
				}
				// The agent may only be stalled and still think the
				// session live: the resync line ends it there.
				l.resync = true
			} else {
				s.reason = &SessionError{"agent: the guest broke the protocol: yamux: " + err.Error(), errors.Join(ErrProtocol, err)}
				terminal = true
			}
		}
		if l.cur == s {
			l.cur = nil
			l.notifyLocked()
		}
		reason := s.reason
		l.mu.Unlock()
		s.stop(false)
		if terminal {
			l.fail(reason)
		} else if errors.Is(reason, ErrAgentSilent) {
			l.wakeWriter()
			l.opts.Logf("%v", reason)
		}
		close(s.ended)
		s.ys.Close()
		return
	}
}

// over says whether the session has ended or is ending.
func (s *session) over() bool {
	select {
	case <-s.dead:
		return true
	default:
		return s.ys.IsClosed()
	}
}

// Read, Write and Close make the session yamux's connection.
func (s *session) Read(p []byte) (int, error)  { return s.out.Read(p) }
func (s *session) Write(p []byte) (int, error) { return s.fw.Write(p) }
func (s *session) Close() error {
	s.stop(false)
	s.out.CloseWithError(errSessionOver)
	return nil
}

// writeFrame writes one whole frame, once the answer to the preamble is
// out. A frame of a session that is over is dropped: its agent has gone,
// and an error would cut short yamux taking the last bytes it was sent.
func (s *session) writeFrame(frame []byte) error {
	select {
	case <-s.acked:
	case <-s.dead:
		return nil
	}
	l := s.l
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	select {
	case <-s.dead:
		return nil
	default:
	}
	if _, err := l.conn.Write(frame); err != nil {
		l.fail(portError("writing", err)) // takes no writeMu
		return err
	}
	return nil
}

// open opens a stream; ctx bounds the wait (yamux waits only when 256
// opens are still unanswered).
func (s *session) open(ctx context.Context) (net.Conn, error) {
	type result struct {
		st  *yamux.Stream
		err error
	}
	var mu sync.Mutex
	abandoned := false
	ch := make(chan result, 1)
	if !s.l.goroutine(func() {
		st, err := s.ys.OpenStream()
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if st != nil {
				st.Close()
			}
			return
		}
		ch <- result{st, err}
	}) {
		return nil, s.l.Err()
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, s.streamErr(r.err)
		}
		return &stream{Stream: r.st, s: s}, nil
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		select {
		case r := <-ch:
			if r.st != nil {
				r.st.Close()
			}
		default:
		}
		mu.Unlock()
		return nil, ctx.Err()
	}
}

// streamErr turns an error of a stream into the session's reason once the
// session is over (yamux reports a closed session as a stream's end of
// file, or as the error of the write that its end cut short).
func (s *session) streamErr(err error) error {
	if s.over() {
		<-s.ended // soon: yamux ends once its input does
		return s.reason
	}
	if errors.Is(err, yamux.ErrConnectionReset) {
		return errors.New("agent: the guest reset the stream")
	}
	return err
}

// stream is a yamux stream whose errors name the session's end.
type stream struct {
	*yamux.Stream
	s *session
}

func (c *stream) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	if err != nil {
		err = c.s.streamErr(err)
	}
	return n, err
}

func (c *stream) Write(p []byte) (int, error) {
	n, err := c.Stream.Write(p)
	if err != nil {
		err = c.s.streamErr(err)
	}
	return n, err
}
