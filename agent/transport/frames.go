package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// yamux's framing (its spec.md): a 12-byte header of version (0), type,
// flags, stream id and length; only a data frame has a body, of length
// bytes. Both ends follow it below yamux so that a session can be ended
// exactly between two frames, and the first byte that should start a frame
// but does not is seen for what it is: the next preamble, the host's
// resync line, or garbage.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	yamuxTypeWindow = 1
	yamuxTypePing   = 2
	yamuxFlagSYN    = 1
	yamuxFlagFIN    = 4
	yamuxFlagRST    = 8
)

// YamuxHeader is a yamux frame header, as the FrameTracker saw it.
type YamuxHeader struct {
	Type   byte
	Flags  uint16
	Stream uint32
	Length uint32
}

// RefuseHostBound is the host's check of the guest's frames: a guest
// never pings (yamux answers each ping in a goroutine of its own, which a
// guest that pings without reading could multiply until the host runs out
// of memory) and never opens a stream (only the host does).
func RefuseHostBound(h YamuxHeader) error {
	switch {
	case h.Type == yamuxTypePing && h.Flags&yamuxFlagSYN != 0:
		return errors.New("the guest sent a ping, which only the host does")
	case (h.Type == yamuxTypeData || h.Type == yamuxTypeWindow) && h.Flags&yamuxFlagSYN != 0:
		return errors.New("the guest opened a stream, which only the host does")
	case h.Type > 3:
		return fmt.Errorf("a frame of unknown type %d", h.Type)
	}
	return nil
}

// FrameTracker follows yamux frames through a byte stream.
type FrameTracker struct {
	// Refuse, when set, checks each header: a refused one is not taken
	// (its last byte stays untaken, so yamux never acts on it), Advance
	// stops, and Err says why.
	Refuse func(YamuxHeader) error
	err    error

	hdr  [yamuxHeaderSize]byte
	n    int    // header bytes seen
	body uint32 // body bytes still to come
	// since counts the bytes of the frame being read (0 at a boundary).
	since int
}

// Advance takes the bytes of p that continue the stream's frames and
// returns how many it took. It stops before a byte that should start a
// frame but is not yamux's version 0, and then says so with stopped.
func (t *FrameTracker) Advance(p []byte) (n int, stopped bool) {
	for n < len(p) {
		if t.body > 0 {
			k := min(uint32(len(p)-n), t.body)
			t.body -= k
			n += int(k)
			t.since += int(k)
			if t.body == 0 {
				t.since = 0
			}
			continue
		}
		if t.err != nil {
			return n, true
		}
		if t.n == 0 && p[n] != 0 {
			return n, true
		}
		k := copy(t.hdr[t.n:], p[n:])
		t.n += k
		n += k
		t.since += k
		if t.n == yamuxHeaderSize && t.Refuse != nil {
			h := YamuxHeader{
				Type:   t.hdr[1],
				Flags:  binary.BigEndian.Uint16(t.hdr[2:]),
				Stream: binary.BigEndian.Uint32(t.hdr[4:]),
				Length: binary.BigEndian.Uint32(t.hdr[8:]),
			}
			if err := t.Refuse(h); err != nil {
				t.err = err
				t.n--
				t.since--
				return n - 1, true
			}
		}
		if t.n == yamuxHeaderSize {
			t.n = 0
			if t.hdr[1] == yamuxTypeData {
				t.body = binary.BigEndian.Uint32(t.hdr[8:])
			}
			if t.body == 0 {
				t.since = 0
			}
		}
	}
	return n, false
}

// Err is why Refuse stopped the stream; nil otherwise.
func (t *FrameTracker) Err() error { return t.err }

// InFrame is how many bytes of an unfinished frame have been taken (0 at a
// frame boundary).
func (t *FrameTracker) InFrame() int { return t.since }

// FrameWriter turns yamux's writes into whole frames, each handed to emit
// in one call, of at most max bytes (0: no bound): a longer data frame is
// cut into several data frames of the same stream, which yamux's receiver
// takes as the same bytes (window accounting is per byte; SYN and ACK go
// with the first piece, FIN and RST with the last). yamux writes a header
// and its body with two writes; joining them lets the link end a session
// between frames, and lets a guest agent that dies mid-write leave no torn
// frame behind.
type FrameWriter struct {
	emit  func(frame []byte) error
	max   int
	hdr   [yamuxHeaderSize]byte
	n     int
	left  uint32 // body bytes still to come
	first bool   // the next piece is the frame's first
	buf   []byte
}

// NewFrameWriter writes frames with emit, each at most max bytes (0: no
// bound; else at least 13).
func NewFrameWriter(emit func(frame []byte) error, max int) *FrameWriter {
	if max != 0 && max <= yamuxHeaderSize {
		panic("wire: FrameWriter bound too small")
	}
	return &FrameWriter{emit: emit, max: max}
}

var errFrameWriterFailed = errors.New("an earlier write to the port failed")

// Write takes bytes of yamux's output stream.
func (w *FrameWriter) Write(p []byte) (int, error) {
	if w.emit == nil {
		return 0, errFrameWriterFailed
	}
	total := len(p)
	for len(p) > 0 {
		if w.left == 0 {
			k := copy(w.hdr[w.n:], p)
			w.n += k
			p = p[k:]
			if w.n < yamuxHeaderSize {
				break
			}
			w.n = 0
			if w.hdr[1] == yamuxTypeData {
				w.left = binary.BigEndian.Uint32(w.hdr[8:])
			}
			if w.left == 0 {
				if err := w.send(w.hdr[:]); err != nil {
					return total - len(p), err
				}
				continue
			}
			w.first = true
			continue
		}
		k := min(uint32(len(p)), w.left)
		if w.max > 0 {
			k = min(k, uint32(w.max-yamuxHeaderSize))
		}
		last := k == w.left
		flags := binary.BigEndian.Uint16(w.hdr[2:])
		var f uint16
		if w.first {
			f |= flags &^ (yamuxFlagFIN | yamuxFlagRST)
		}
		if last {
			f |= flags & (yamuxFlagFIN | yamuxFlagRST)
		}
		w.buf = append(w.buf[:0], w.hdr[:]...)
		binary.BigEndian.PutUint16(w.buf[2:], f)
		binary.BigEndian.PutUint32(w.buf[8:], k)
		w.buf = append(w.buf, p[:k]...)
		if err := w.send(w.buf); err != nil {
			return total - len(p), err
		}
		w.first = false
		w.left -= k
		p = p[k:]
	}
	return total, nil
}

func (w *FrameWriter) send(frame []byte) error {
	if err := w.emit(frame); err != nil {
		w.emit = nil // the stream is broken mid-frame: refuse the rest
		return err
	}
	return nil
}
