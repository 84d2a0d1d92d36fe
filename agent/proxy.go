package agent

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/agent/wire"
	"github.com/sonix-run/sonix-run/internal/termsafe"
)

// sessionEnds maps the errors a session ends with to ErrorReply.Session.
var sessionEnds = []struct {
	err  error
	name string
}{
	{ErrAgentGone, wire.SessionAgentGone},
	{ErrAgentRestarted, wire.SessionAgentRestarted},
	{ErrAgentSilent, wire.SessionAgentSilent},
	{ErrVMEnded, wire.SessionVMEnded},
	{ErrLinkClosed, wire.SessionLinkClosed},
	{ErrProtocol, wire.SessionProtocol},
	{ErrVersion, wire.SessionVersion},
}

// Proxy passes one operation's stream between client, a connection whose
// other end is a Client (for sonix-run, through the VM's control socket),
// and stream, from Link.Dial, until both directions have ended; it then
// closes both. The client's bytes go to the guest as they are; the guest's
// frames go to the client whole. Each direction ends on its own, as on the
// stream itself: the client's end of input is passed on as the stream's
// close (yamux's half-close), and the guest's as client's CloseWrite when
// it has one, so that input still on its way (a command's stdin) is never
// cut off by the other side finishing first. When the stream fails because
// its session ended (the agent's port closed, the agent restarted or went
// silent, the VM ended), the client gets an error frame that says so,
// which its Exec, copies, hello and poweroff return as the same
// *SessionError as Link's own (errors.Is finds ErrAgentGone and the
// others): a verb through the socket says what happened rather than "the
// guest closed the stream". A frame that breaks the protocol is reported
// to the client the same way.
func Proxy(client, stream net.Conn) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			stream.Close()
		})
	}
	defer closeBoth()
	toGuest := make(chan struct{})
	go func() {
		defer close(toGuest)
		if _, err := io.Copy(stream, client); err != nil {
			closeBoth()
			return
		}
		stream.Close() // yamux: a half-close; the guest's replies still come
	}()
	if !proxyFrames(client, stream) {
		closeBoth()
		<-toGuest
		return
	}
	if cw, ok := client.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		// The client reads the end and hangs up; one that does not is
		// not waited for long.
		t := time.NewTimer(proxyLinger)
		defer t.Stop()
		select {
		case <-toGuest:
			return
		case <-t.C:
		}
	}
	closeBoth()
	<-toGuest
}

// proxyLinger bounds how long Proxy waits for a client's input to end once
// the guest's side of the stream has.
const proxyLinger = time.Minute

// proxyFrames passes the guest's frames to client until the stream ends;
// false when it failed (an error frame then told the client why, where
// there is one) or client did.
func proxyFrames(client, stream net.Conn) bool {
	r := wire.NewReader(stream)
	var buf []byte
	for {
		f, err := r.Next()
		if err == io.EOF {
			return true
		}
		if err != nil {
			if b := proxyError(err); b != nil {
				client.Write(wire.AppendFrame(nil, wire.FrameError, b))
			}
			return false
		}
		payload := f.Payload
		if f.Type == wire.FrameError {
			payload = guestOnly(payload)
		}
		buf = wire.AppendFrame(buf[:0], f.Type, payload)
		if _, err := client.Write(buf); err != nil {
			return false
		}
	}
}

// guestOnly is a guest's error frame without a Session: only the proxy
// may say that a session ended, so a guest cannot pass its own errors off
// as the host's.
func guestOnly(p []byte) []byte {
	e, err := wire.DecodeError(p)
	if err != nil || e.Session == "" {
		return p // a malformed one fails at the client as it is
	}
	return wire.EncodeError(e.Status, e.Message)
}

// proxyError is the error frame's payload that tells the client why the
// stream failed; nil for its plain end.
func proxyError(err error) []byte {
	var v *wire.ViolationError
	if name := SessionEndOf(err); name != "" {
		return wire.EncodeSessionError(name, err.Error())
	}
	if errors.As(err, &v) {
		return wire.EncodeSessionError(wire.SessionProtocol, "agent: stream: "+v.Error())
	}
	return nil
}

// SessionEndOf names how the session behind err ended (a wire.Session
// value), for a proxy to tell its client; "" when err is not a session's
// end.
func SessionEndOf(err error) string {
	var se *SessionError
	if !errors.As(err, &se) {
		return ""
	}
	for _, e := range sessionEnds {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return wire.SessionOther
}

// SessionEnded is the *SessionError that a proxy's name for a session's
// end (SessionEndOf) and its message stand for: errors.Is finds
// ErrAgentGone and the others on the client's side of the proxy too.
func SessionEnded(name, msg string) error {
	se := &SessionError{Msg: termsafe.Line(msg)}
	for _, s := range sessionEnds {
		if s.name == name {
			se.Err = s.err
		}
	}
	return se
}

// sessionError is the *SessionError an error frame from a Proxy stands for.
func sessionError(e *wire.ErrorReply) error {
	if e.Session == "" {
		return nil
	}
	return SessionEnded(e.Session, e.Message)
}
