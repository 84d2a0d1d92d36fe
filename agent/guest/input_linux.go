//go:build linux

package guest

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// input is the state of a command's standard input, which the host sends
// on a stream of its own (wire.OpStdin), so that it never holds up the
// command's control frames: yamux's window is its only flow control, and
// a command that does not read its input only stops that stream.
type input struct {
	mu       sync.Mutex
	closed   bool     // the command's input has ended (stdin-eof, close-stdin)
	finished bool     // the command has ended: no stream attaches any more
	stream   net.Conn // the stdin stream, once attached
	wg       sync.WaitGroup
}

// attachInput serves the command's stdin stream o: it writes the data to
// the command until the end of input (stdin-eof), the stream's end (also
// the end of input) or the command's.
func (x *execution) attachInput(o *op) {
	in := &x.in
	in.mu.Lock()
	var refuse string
	switch {
	case x.io.in == nil:
		refuse = "takes no input (its request had no stdin)"
	case in.finished:
		refuse = "has ended"
	case in.stream != nil:
		refuse = "already has its stdin stream"
	case in.closed:
		refuse = "has had its input closed"
	}
	if refuse != "" {
		in.mu.Unlock()
		o.fail(0, "command %d %s", x.id, refuse)
		return
	}
	in.stream = o.conn
	in.wg.Add(1)
	in.mu.Unlock()
	defer in.wg.Done()
	for {
		f, err := o.r.Next()
		if err != nil {
			var v *wire.ViolationError
			if errors.As(err, &v) {
				o.fail(0, "%v", err)
			}
			// The host closed the stream without the end of input, or
			// the command ended (finishInput's deadline).
			x.closeInput()
			return
		}
		switch f.Type {
		case wire.FrameStdin:
			if _, err := x.io.in.Write(f.Payload); err != nil {
				// The command closed its input, or has ended: the rest
				// is dropped. The host's writes wait on yamux's window
				// until the command's end closes this stream.
				return
			}
		case wire.FrameStdinEOF:
			x.closeInput()
			return
		default:
			o.fail(0, "unexpected %s frame on a stdin stream", f.Type)
			x.closeInput()
			return
		}
	}
}

// closeInput ends the command's input: a pipe is closed (the command reads
// end of file); on a terminal the EOF character is typed (Ctrl-D in
// canonical mode). Input of the stdin stream not yet written is dropped.
func (x *execution) closeInput() {
	in := &x.in
	in.mu.Lock()
	if in.closed || x.io.in == nil {
		in.mu.Unlock()
		return
	}
	in.closed = true
	st := in.stream
	in.mu.Unlock()
	if st != nil {
		st.SetReadDeadline(time.Now())
	}
	if x.io.master != nil {
		x.io.master.Write(eofChar(x.io.master))
	} else {
		x.io.closeIn()
	}
}

// finishInput stops the stdin stream once the command has ended (a write
// waiting on a full pipe, a read waiting for the host) and waits for it.
func (x *execution) finishInput() {
	in := &x.in
	in.mu.Lock()
	in.finished = true
	st := in.stream
	in.mu.Unlock()
	if x.io.in != nil {
		x.io.in.SetWriteDeadline(time.Now())
	}
	if st != nil {
		st.SetReadDeadline(time.Now())
	}
	in.wg.Wait()
}
