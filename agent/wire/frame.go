// Package wire is the protocol between sonix-run (the host) and its guest
// agent, sonix-run-agent: what one yamux stream carries, as a sequence of
// typed, length-prefixed frames: one request, then that operation's frames
// (package transport carries the streams over the port). docs/protocol.md is
// the specification; this package is its one implementation, shared by
// both ends.
package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// PortName is the name of the virtio console port that carries the
// protocol.
const PortName = "org.sonix-run.agent"

// Version is the protocol version; a Request and the session's lines name
// it, and each end refuses any other.
const Version = 2

// FrameType says what a frame's payload is. Types below 0x10 go from host
// to guest, types from 0x10 from guest to host.
type FrameType uint8

// Frames from the host.
const (
	// FrameRequest is the first frame of every stream: a Request (JSON).
	FrameRequest FrameType = 0x01
	// FrameStdin carries data: a command's standard input (on its stdin
	// stream); put's tar archive.
	FrameStdin FrameType = 0x02
	// FrameStdinEOF ends the FrameStdin data (no payload).
	FrameStdinEOF FrameType = 0x03
	// FrameSignal asks to deliver a signal to the command's process group
	// (1 byte: the Linux signal number, 1-64).
	FrameSignal FrameType = 0x04
	// FrameResize sets the command's terminal size (4 bytes: rows, cols,
	// big-endian uint16 each).
	FrameResize FrameType = 0x05
	// FrameKill asks to end the command: SIGTERM to its process group, then
	// SIGKILL after the request's kill grace (no payload).
	FrameKill FrameType = 0x06
	// FrameCloseStdin closes the command's standard input now (no
	// payload): it reads end of file (with a terminal, the EOF character
	// is typed); input of its stdin stream not yet written is dropped.
	FrameCloseStdin FrameType = 0x07
	// FrameCloseOutput closes the guest's end of one of the command's
	// outputs (1 byte: 1 stdout, 2 stderr): its reader went away, so the
	// command's next write there fails with EPIPE (SIGPIPE), as it would
	// locally. With a terminal, closing stdout hangs the terminal up.
	FrameCloseOutput FrameType = 0x08
)

// Frames from the guest.
const (
	// FrameReply ends a hello, put, get or poweroff that succeeded (JSON:
	// Hello for hello, {} for the others).
	FrameReply FrameType = 0x10
	// FrameStarted says exec started the command, or put is ready for the
	// archive (4 bytes, big-endian uint32: exec's command id, which the
	// command's stdin stream names; 0 for put).
	FrameStarted FrameType = 0x11
	// FrameStdout carries data: exec's standard output (or terminal output);
	// get's tar archive.
	FrameStdout FrameType = 0x12
	// FrameStderr carries exec's standard error.
	FrameStderr FrameType = 0x13
	// FrameExit ends an exec whose command ran (5 bytes, see Exit).
	FrameExit FrameType = 0x14
	// FrameError ends any operation that failed (JSON, see ErrorReply).
	FrameError FrameType = 0x15
)

// Bounds on frames and their fields.
const (
	HeaderSize    = 5         // 1 byte type, 4 bytes big-endian payload length
	MaxData       = 256 << 10 // payload of FrameStdin, FrameStdout, FrameStderr
	MaxRequest    = 1 << 20   // payload of FrameRequest
	MaxReply      = 64 << 10  // payload of FrameReply
	MaxErrorFrame = 8 << 10   // payload of FrameError
	MaxMessage    = 4 << 10   // ErrorReply.Message, in bytes
	MaxSignal     = 64        // highest Linux signal number (SIGRTMAX)
	MaxWinSize    = 10000     // highest terminal rows or columns
)

type frameInfo struct {
	name     string
	min, max int
}

var frameInfos = map[FrameType]frameInfo{
	FrameRequest:     {"request", 2, MaxRequest},
	FrameStdin:       {"stdin", 1, MaxData},
	FrameStdinEOF:    {"stdin-eof", 0, 0},
	FrameSignal:      {"signal", 1, 1},
	FrameResize:      {"resize", 4, 4},
	FrameKill:        {"kill", 0, 0},
	FrameCloseStdin:  {"close-stdin", 0, 0},
	FrameCloseOutput: {"close-output", 1, 1},
	FrameReply:       {"reply", 2, MaxReply},
	FrameStarted:     {"started", 4, 4},
	FrameStdout:      {"stdout", 1, MaxData},
	FrameStderr:      {"stderr", 1, MaxData},
	FrameExit:        {"exit", 5, 5},
	FrameError:       {"error", 2, MaxErrorFrame},
}

// String names the type, or gives its number when it has no name.
func (t FrameType) String() string {
	if fi, ok := frameInfos[t]; ok {
		return fi.name
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Known says whether t is a frame type of this protocol version.
func (t FrameType) Known() bool {
	_, ok := frameInfos[t]
	return ok
}

// FromHost says whether frames of type t go from host to guest.
func (t FrameType) FromHost() bool { return t < 0x10 }

// Frame is one frame: its type and payload.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// A ViolationError is a frame that breaks the protocol: an unknown type, a
// length out of bounds, a stream that ends inside a frame.
type ViolationError struct{ Msg string }

func (e *ViolationError) Error() string { return e.Msg }

func violation(format string, args ...any) error {
	return &ViolationError{fmt.Sprintf(format, args...)}
}

// ErrFrameCut means the byte stream ended inside a frame.
var ErrFrameCut error = &ViolationError{"the stream ended inside a frame"}

// Reader reads frames, checking each header before it reads the payload.
type Reader struct {
	r   io.Reader
	hdr [HeaderSize]byte
	buf []byte
}

// NewReader reads frames from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads the next frame. A payload is valid until the following call
// of Next. At the end of the stream between frames it returns io.EOF; an
// unknown type, a length out of the type's bounds or a stream that ends
// inside a frame is an error that says so.
func (r *Reader) Next() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Frame{}, ErrFrameCut
		}
		return Frame{}, err
	}
	t := FrameType(r.hdr[0])
	n := binary.BigEndian.Uint32(r.hdr[1:])
	if err := CheckHeader(t, n); err != nil {
		return Frame{}, err
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n, max(int(n), 4<<10))
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Frame{}, violation("the stream ended inside the %s frame", t)
		}
		return Frame{}, err
	}
	return Frame{Type: t, Payload: p}, nil
}

// CheckHeader checks a frame header: a known type and a payload length
// within that type's bounds.
func CheckHeader(t FrameType, n uint32) error {
	fi, ok := frameInfos[t]
	if !ok {
		return violation("frame type %d unknown", uint8(t))
	}
	switch {
	case fi.min == fi.max && int64(n) != int64(fi.min):
		return violation("%s frame of %d bytes: it must have %d", t, n, fi.min)
	case int64(n) > int64(fi.max):
		return violation("%s frame of %d bytes exceeds the %d-byte bound", t, n, fi.max)
	case int64(n) < int64(fi.min):
		return violation("%s frame of %d bytes is shorter than %d", t, n, fi.min)
	}
	return nil
}

// Writer writes frames; it is safe for concurrent use, and writes each
// frame with one Write so that frames never interleave.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewWriter writes frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes one frame, refusing a payload out of the type's bounds.
func (w *Writer) Write(t FrameType, payload []byte) error {
	if err := CheckHeader(t, uint32(min(len(payload), 1<<31))); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = AppendFrame(w.buf[:0], t, payload)
	_, err := w.w.Write(w.buf)
	return err
}

// WriteData writes a data frame of type t whose payload is b[HeaderSize:]:
// the caller read the payload there, leaving room for the header, which
// WriteData fills in, so that the frame goes out in one Write without
// being copied.
func (w *Writer) WriteData(t FrameType, b []byte) error {
	if len(b) < HeaderSize {
		return fmt.Errorf("wire: WriteData needs %d bytes of room for the header", HeaderSize)
	}
	if err := CheckHeader(t, uint32(min(len(b)-HeaderSize, 1<<31))); err != nil {
		return err
	}
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-HeaderSize))
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.w.Write(b)
	return err
}

// AppendFrame appends the encoded frame to b. It does not check bounds.
func AppendFrame(b []byte, t FrameType, payload []byte) []byte {
	b = append(b, byte(t), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-4:], uint32(len(payload)))
	return append(b, payload...)
}

// DataWriter is an io.Writer that sends what it is given as data frames of
// type T, each of up to MaxData bytes, gathered in one buffer that keeps
// room for the header (a bufio.Writer would take one copy more). Flush
// sends what is gathered. Send, when set, sends a frame instead of
// W.WriteData: for a caller that bounds each send.
type DataWriter struct {
	W    *Writer
	T    FrameType
	Send func(t FrameType, b []byte) error
	buf  []byte // a header's room, then data
}

func (d *DataWriter) Write(p []byte) (int, error) {
	if d.buf == nil {
		d.buf = make([]byte, HeaderSize, HeaderSize+MaxData)
	}
	n := 0
	for len(p) > 0 {
		k := copy(d.buf[len(d.buf):cap(d.buf)], p)
		d.buf = d.buf[:len(d.buf)+k]
		n += k
		p = p[k:]
		if len(d.buf) == cap(d.buf) {
			if err := d.Flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Flush sends what is gathered, if anything.
func (d *DataWriter) Flush() error {
	if len(d.buf) <= HeaderSize {
		return nil
	}
	var err error
	if d.Send != nil {
		err = d.Send(d.T, d.buf)
	} else {
		err = d.W.WriteData(d.T, d.buf)
	}
	d.buf = d.buf[:HeaderSize]
	return err
}
