package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"

	"github.com/hashicorp/yamux"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// ErrNoHost means the host did not take the preamble, or the port closed
// before the host answered it: the port's host side is not connected (a
// virtio port reads as end of file then). The caller opens the port again
// after a pause.
var ErrNoHost = errors.New("the host side of the port is not connected")

// ErrHostHungUp means the host ended the session.
var ErrHostHungUp = errors.New("the host hung up")

// ErrHostResync means the host gave the session up (it had stopped hearing
// from the agent, e.g. while the guest was paused) and asked for a new one.
var ErrHostResync = errors.New("the host gave the session up and asked for a new one")

// Serve serves one session on conn, a newly opened port: it writes the
// preamble, waits for the host's answer (skipping whatever an earlier
// session left in the port), then serves yamux, giving each stream the
// host opens to handle in a goroutine of its own, until the host hangs up
// or asks for a new session, the session fails or ctx ends. It then
// cancels the context handle got, waits for every handle to return and
// closes conn. logf, when not nil, gets one line per event.
func Serve(ctx context.Context, conn io.ReadWriteCloser, logf func(format string, args ...any), handle func(ctx context.Context, st net.Conn)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	pc, id, err := handshake(ctx, conn)
	if err != nil {
		conn.Close()
		return err
	}
	logf("session %s: the host answered", id)
	sess, err := yamux.Server(pc, YamuxConfig())
	if err != nil {
		conn.Close()
		return err
	}
	opsCtx, cancelOps := context.WithCancel(ctx)
	defer cancelOps()

	var wg sync.WaitGroup
	sessionOver := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			sess.Close()
		case <-sessionOver:
		}
	}()
	for {
		st, aerr := sess.AcceptStream()
		if aerr != nil {
			err = aerr
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			handle(opsCtx, st)
		}()
	}
	cancelOps()
	close(sessionOver)
	sess.Close()
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// A socket's host that closes with bytes unread resets it; a
		// write after its close breaks the pipe.
		return ErrHostHungUp
	case errors.Is(err, ErrHostResync):
		return ErrHostResync
	}
	return fmt.Errorf("session %s: %w", id, err)
}

// handshake writes the preamble on a newly opened port and reads up to the
// host's answer to it. Before that answer the port may hold anything the
// host sent to an earlier agent (QEMU keeps what the host writes while the
// port is closed): every byte up to the line that names this preamble's id
// is skipped. It returns the port ready for yamux, with the bytes that
// followed the answer.
func handshake(ctx context.Context, conn io.ReadWriteCloser) (*portConn, string, error) {
	id := NewSessionID()
	// Nothing else ends a write or read that waits for the host.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// A port's write waits while its host side is not connected; a
	// socket's fails when the host has gone.
	if _, err := conn.Write(AgentPreamble(id)); err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", fmt.Errorf("%w (writing the preamble: %v)", ErrNoHost, err)
	}
	var versionErr error
	scan := NewLineScanner(HostMagic, func(line []byte) bool {
		l, err := ParseLine(line, HostMagic)
		switch {
		case err != nil:
			return false
		case l.Version != wire.Version && string(line) == HostMagic+strconv.Itoa(l.Version)+" "+id:
			// Exactly this preamble's answer, in another version (not a
			// line cut short that runs into the answer).
			versionErr = fmt.Errorf("the host answered in protocol version %d; this agent speaks %d", l.Version, wire.Version)
			return true
		}
		return l.Token == id
	})
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if _, rest, ok := scan.Feed(buf[:n]); ok {
			if versionErr != nil {
				return nil, "", versionErr
			}
			pc := &portConn{conn: conn, pending: rest}
			pc.w = NewFrameWriter(pc.writeFrame, MaxPortWrite)
			return pc, id, nil
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, "", ctx.Err()
		case errors.Is(err, io.EOF):
			return nil, "", ErrNoHost
		default:
			return nil, "", fmt.Errorf("waiting for the host's answer: %w", err)
		}
	}
}

// portConn is the port under the guest's yamux session. It follows yamux's
// frames in what the host sends, so that the first byte that should start
// a frame but does not ends the session with what it was (the host's
// resync line, or garbage); and it writes every frame with one write of at
// most MaxPortWrite bytes, so that the agent, killed at any moment,
// never leaves a torn frame in front of the next agent's preamble.
type portConn struct {
	conn    io.ReadWriteCloser
	pending []byte // read from conn, not yet given to yamux
	tracker FrameTracker
	bad     []byte // from a frame boundary on: bytes that are not yamux
	err     error  // once set, every Read returns it
	w       *FrameWriter
}

func (c *portConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.bad != nil {
		c.err = c.judge()
		return 0, c.err
	}
	var n int
	var readErr error
	if len(c.pending) > 0 {
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	} else {
		n, readErr = c.conn.Read(p)
	}
	k, stopped := c.tracker.Advance(p[:n])
	if stopped {
		c.bad = append(append([]byte(nil), p[k:n]...), c.pending...)
		c.pending = nil
		if k == 0 {
			c.err = c.judge()
			return 0, c.err
		}
		return k, nil
	}
	if readErr != nil {
		c.err = readErr // returned once these bytes are taken
		if k == 0 {
			return 0, c.err
		}
	}
	return k, nil
}

// judge says what the bytes that are not yamux are, reading as many more
// as it takes to tell the host's resync line.
func (c *portConn) judge() error {
	want := HostResync()
	for len(c.bad) < len(want) && bytes.HasPrefix(want, c.bad) {
		more := make([]byte, len(want)-len(c.bad))
		n, err := c.conn.Read(more)
		c.bad = append(c.bad, more[:n]...)
		if err != nil {
			break
		}
	}
	if bytes.HasPrefix(c.bad, want) {
		return ErrHostResync
	}
	return fmt.Errorf("the host sent bytes that are not yamux: %q", c.bad[:min(len(c.bad), 32)])
}

func (c *portConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *portConn) writeFrame(frame []byte) error {
	_, err := c.conn.Write(frame)
	return err
}

func (c *portConn) Close() error { return c.conn.Close() }
