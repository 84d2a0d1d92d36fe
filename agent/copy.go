package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sonix-run/sonix-run/agent/internal/copytar"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// CopyTo copies the host file or directory hostSrc into the guest, as
// "docker cp SRC NAME:DST" does: when guestDst is an existing directory,
// hostSrc goes inside it under its own name; otherwise guestDst is its new
// name (its parent must exist). Directories are copied whole; permission
// bits and modification times are kept, symbolic links copied as links.
func (c *Client) CopyTo(ctx context.Context, hostSrc, guestDst string) error {
	if _, err := os.Lstat(hostSrc); err != nil {
		return fmt.Errorf("agent: put: %w", err)
	}
	req := &wire.Request{Version: wire.Version, Op: wire.OpPut, Put: &wire.PathRequest{Path: wire.ByteString(guestDst)}}
	k, end, err := c.begin(ctx, req)
	if err != nil {
		return err
	}
	defer end()
	f, err := k.r.Next()
	if err != nil {
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
			err = k.fail(ctx, "the end of the copy", err)
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
	bw := bufio.NewWriterSize(dataWriter{k.w, wire.FrameStdin}, wire.MaxData)
	werr := copytar.Write(bw, hostSrc)
	if werr == nil {
		werr = bw.Flush()
	}
	if werr == nil {
		if err := k.w.Write(wire.FrameStdinEOF, nil); err != nil {
			werr = &streamWriteError{err}
		}
	} else {
		// Not sending the end of the archive makes the guest fail the put;
		// closing the stream ends the wait for its answer.
		k.conn.Close()
	}
	aerr := <-answer
	var sw *streamWriteError
	switch {
	case werr == nil:
		return aerr
	case ctx.Err() != nil:
		return ctx.Err()
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

// dataWriter writes data as frames of one type, each within the bound.
type dataWriter struct {
	w *wire.Writer
	t wire.FrameType
}

func (d dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), wire.MaxData)
		if err := d.w.Write(d.t, p[:c]); err != nil {
			return n, &streamWriteError{err}
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// CopyFrom copies the guest file or directory guestSrc to the host, with
// the same rules as CopyTo. The guest's archive is checked as hostile
// input: no absolute names or ".." components, nothing written through a
// symbolic link, no setuid or setgid bits.
func (c *Client) CopyFrom(ctx context.Context, guestSrc, hostDst string) error {
	if err := copytar.CheckDestination(hostDst); err != nil {
		return fmt.Errorf("agent: get: %w", err)
	}
	req := &wire.Request{Version: wire.Version, Op: wire.OpGet, Get: &wire.PathRequest{Path: wire.ByteString(guestSrc)}}
	k, end, err := c.begin(ctx, req)
	if err != nil {
		return err
	}
	defer end()
	in := &archiveReader{k: k, ctx: ctx}
	err = copytar.Extract(in, hostDst, copytar.Options{})
	if err == nil {
		// Read up to the reply: after the archive's end blocks.
		_, err = io.Copy(io.Discard, in)
	}
	switch {
	case in.err != nil:
		return in.err
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("agent: get: %w", err)
	}
	return nil
}

// archiveReader reads the data of stdout frames until the reply, keeping
// the error of the stream or the guest apart from the archive's.
type archiveReader struct {
	k    *call
	ctx  context.Context
	buf  []byte
	done bool
	err  error
}

func (a *archiveReader) Read(p []byte) (int, error) {
	for len(a.buf) == 0 {
		if a.done {
			return 0, io.EOF
		}
		if a.err != nil {
			return 0, a.err
		}
		f, err := a.k.r.Next()
		switch {
		case err != nil:
			a.err = a.k.fail(a.ctx, "the end of the archive", err)
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
