// Package agent is the host side of sonix-run's agent protocol
// (docs/protocol.md): a Link over the agent's port, and a Client that
// runs operations (hello, exec, copies, poweroff) over any Dialer, one
// stream each. It knows nothing of how the VM runs.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/sonix-run/sonix-run/agent/wire"
	"github.com/sonix-run/sonix-run/internal/termsafe"
)

// A Dialer opens one new stream to the guest agent: Link.Dial, or a
// connection through sonix-run's control socket that is spliced onto such
// a stream. Closing the connection must close the stream.
type Dialer func(ctx context.Context) (net.Conn, error)

// Client runs operations on the guest agent, each on its own stream; it is
// safe for concurrent use.
type Client struct {
	dial Dialer
}

// NewClient runs operations over streams that dial opens.
func NewClient(dial Dialer) *Client { return &Client{dial: dial} }

// GuestError is a failure the guest agent reported.
type GuestError struct {
	Op string // the operation: exec, put, get, hello, poweroff
	// Status is, for an exec whose command could not start, the shell's
	// status for it: 125 the agent could not set it up (directory, user,
	// terminal), 126 not executable, 127 not found. 0 otherwise.
	Status  int
	Message string
}

// Error shows the guest's message as one line without control characters
// (it may be written to a terminal; the guest chose it).
func (e *GuestError) Error() string { return "agent: " + e.Op + ": " + termsafe.Line(e.Message) }

// call is one operation's stream.
type call struct {
	op   string
	req  []byte // the encoded request
	conn net.Conn
	r    *wire.Reader
	w    *wire.Writer
}

// open encodes req, opens a stream and sends req on it.
func (c *Client) open(ctx context.Context, req *wire.Request) (*call, error) {
	b, err := wire.EncodeRequest(req)
	if err != nil {
		return nil, fmt.Errorf("agent: %v", err) // names the field
	}
	conn, err := c.dial(ctx)
	if err != nil {
		var se *SessionError
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.As(err, &se):
			return nil, err
		}
		return nil, fmt.Errorf("agent: %s: opening a stream: %w", req.Op, err)
	}
	return &call{op: req.Op, req: b, conn: conn, r: wire.NewReader(conn), w: wire.NewWriter(conn)}, nil
}

// sendRequest sends the request frame; separate from open so that the
// caller has bound ctx to the stream first.
func (k *call) sendRequest(ctx context.Context) error {
	if err := k.w.Write(wire.FrameRequest, k.req); err != nil {
		return k.fail(ctx, "sending the request", err)
	}
	return nil
}

// fail describes an error of the stream: ctx's error once ctx has ended
// (its deadline may be what broke the stream), a frame that breaks the
// protocol, or the stream ending before what was awaited.
func (k *call) fail(ctx context.Context, awaiting string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var v *wire.ViolationError
	var g *GuestError
	var se *SessionError
	switch {
	case errors.As(err, &g), errors.As(err, &se):
		return err
	case errors.As(err, &v):
		return fmt.Errorf("agent: stream: %v", err)
	case err == io.EOF:
		return fmt.Errorf("agent: %s: the guest closed the stream before %s", k.op, awaiting)
	}
	return fmt.Errorf("agent: %s: %s: %w", k.op, awaiting, err)
}

// guestError decodes an error frame.
func (k *call) guestError(p []byte) error {
	e, err := wire.DecodeError(p)
	if err != nil {
		return fmt.Errorf("agent: %s: %v", k.op, err)
	}
	if se := sessionError(e); se != nil {
		return se // the session behind a Proxy ended
	}
	return &GuestError{Op: k.op, Status: e.Status, Message: e.Message}
}

// unexpected describes a frame that has no place here.
func (k *call) unexpected(f wire.Frame, awaiting string) error {
	return fmt.Errorf("agent: stream: unexpected %s frame where %s was expected", f.Type, awaiting)
}

// bindContext makes ctx's end fail every blocked read and write of conn;
// the returned function undoes that and returns once it cannot happen any
// more.
func bindContext(ctx context.Context, conn net.Conn) (unbind func()) {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Now())
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}

// begin opens a stream for req, ties it to ctx and sends the request; end
// unties and closes it.
func (c *Client) begin(ctx context.Context, req *wire.Request) (k *call, end func(), err error) {
	if k, err = c.open(ctx, req); err != nil {
		return nil, nil, err
	}
	unbind := bindContext(ctx, k.conn)
	end = func() {
		unbind()
		k.conn.Close()
	}
	if err := k.sendRequest(ctx); err != nil {
		end()
		return nil, nil, err
	}
	return k, end, nil
}

// AnswerTimeout bounds how long the guest agent may take to answer a
// request (a reply, or the start of a command or copy) once the request is
// on its stream: an agent whose multiplexer still answers but which never
// replies must not hold a verb forever. Generous for a guest under TCG on
// a loaded host.
var AnswerTimeout = 30 * time.Second

// answer reads the first frame of the guest's answer, within AnswerTimeout.
func (k *call) answer(ctx context.Context, awaiting string) (wire.Frame, error) {
	k.conn.SetReadDeadline(time.Now().Add(AnswerTimeout))
	f, err := k.r.Next()
	if err != nil {
		var ne net.Error
		if ctx.Err() == nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
			return f, fmt.Errorf("agent: %s: the guest agent did not answer within %v (it is alive but not replying)", k.op, AnswerTimeout)
		}
		return f, k.fail(ctx, awaiting, err)
	}
	k.conn.SetReadDeadline(time.Time{})
	if ctx.Err() != nil { // bindContext's deadline may have just been cleared
		return f, ctx.Err()
	}
	return f, nil
}

// simple runs an operation whose answer is one frame, and returns that
// reply's payload.
func (c *Client) simple(ctx context.Context, req *wire.Request) ([]byte, error) {
	k, end, err := c.begin(ctx, req)
	if err != nil {
		return nil, err
	}
	defer end()
	f, err := k.answer(ctx, "replying")
	if err != nil {
		return nil, err
	}
	switch f.Type {
	case wire.FrameReply:
		return append([]byte(nil), f.Payload...), nil
	case wire.FrameError:
		return nil, k.guestError(f.Payload)
	}
	return nil, k.unexpected(f, "a reply")
}

// Hello asks the agent who it is. It waits until the agent answers (a
// guest still booting answers once its agent runs); ctx bounds the wait.
func (c *Client) Hello(ctx context.Context) (wire.Hello, error) {
	p, err := c.simple(ctx, &wire.Request{Version: wire.Version, Op: wire.OpHello})
	if err != nil {
		return wire.Hello{}, err
	}
	h, err := wire.DecodeHello(p)
	if err != nil {
		return wire.Hello{}, fmt.Errorf("agent: %v", err)
	}
	return *h, nil
}

// PowerOff asks the agent to power the guest off and returns once it has
// said it will. The VM ends shortly after; waiting for that is the
// caller's.
func (c *Client) PowerOff(ctx context.Context) error {
	_, err := c.simple(ctx, &wire.Request{Version: wire.Version, Op: wire.OpPowerOff})
	return err
}
