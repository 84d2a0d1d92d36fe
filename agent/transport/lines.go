package transport

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// The lines that open a session on the port (docs/protocol.md, "Transport"):
// the guest agent speaks first with its preamble,
//
//	SONIX-RUN-AGENT <version> <id>\n
//
// and the host answers it with its acknowledgement,
//
//	SONIX-RUN-HOST <version> <id>\n
//
// after which both ends speak yamux. id is random for every opening of the
// port, so that an end that skips stale bytes can tell its own line from an
// old one. The host sends ResyncLine to end a session that the guest may
// still think is live.
const (
	AgentMagic = "SONIX-RUN-AGENT "
	HostMagic  = "SONIX-RUN-HOST "
	// MaxLine bounds a line, its newline included; a longer one is not a
	// preamble.
	MaxLine = 128
	// ResyncToken stands in the host's line where an id would: "give up
	// this session and start a new one".
	ResyncToken = "resync"
	idLen       = 32 // hex digits: 128 random bits
)

// MaxPortWrite is the most a guest writes to the port at once: Linux's
// virtio_console queues one write of at most 32 KiB as one buffer, so a
// frame written with one write reaches the host whole even if the agent is
// killed right after (docs/protocol.md, "Transport").
const MaxPortWrite = 32 << 10

// NewSessionID returns a fresh random id for a preamble.
func NewSessionID() string {
	var b [idLen / 2]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// AgentPreamble is the guest agent's first line on a newly opened port.
func AgentPreamble(id string) []byte {
	return []byte(AgentMagic + strconv.Itoa(wire.Version) + " " + id + "\n")
}

// HostAck is the host's answer to the preamble with this id.
func HostAck(id string) []byte {
	return []byte(HostMagic + strconv.Itoa(wire.Version) + " " + id + "\n")
}

// HostResync is the line the host sends to end a session it has given up.
func HostResync() []byte {
	return []byte(HostMagic + strconv.Itoa(wire.Version) + " " + ResyncToken + "\n")
}

// Line is a parsed preamble or host line.
type Line struct {
	Version int
	// Token is the session id, or ResyncToken; empty when Version is not
	// this side's (the rest of such a line is not ours to judge).
	Token string
}

// ParseLine parses a line (without its newline) that starts with magic:
// "<magic><version> <token>". A version other than wire.Version is returned
// without checking the rest, so that the caller can name it.
func ParseLine(line []byte, magic string) (Line, error) {
	rest, ok := bytes.CutPrefix(line, []byte(magic))
	if !ok {
		return Line{}, fmt.Errorf("the line does not start with %q", magic)
	}
	v, token, _ := bytes.Cut(rest, []byte(" "))
	if len(v) == 0 || len(v) > 4 || v[0] == '0' || !allBytes(v, isDigit) {
		return Line{}, fmt.Errorf("version %q is not a number from 1 to 9999", v)
	}
	n, _ := strconv.Atoi(string(v))
	if n != wire.Version {
		return Line{Version: n}, nil
	}
	switch {
	case string(token) == ResyncToken:
	case len(token) != idLen || !allBytes(token, isLowerHex):
		return Line{}, fmt.Errorf("session id %q is not %d lowercase hex digits", token, idLen)
	}
	return Line{Version: n, Token: string(token)}, nil
}

func allBytes(b []byte, ok func(byte) bool) bool {
	for _, c := range b {
		if !ok(c) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool    { return '0' <= c && c <= '9' }
func isLowerHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' }

// LineScanner finds, in a stream of bytes fed to it piece by piece, the
// first line that starts with a magic string and that accept takes,
// skipping everything before it: what an earlier session left in the
// port, a torn frame, other lines. It keeps at most MaxLine bytes between
// calls.
type LineScanner struct {
	magic   []byte
	accept  func(line []byte) bool
	pending []byte
}

// NewLineScanner scans for lines starting with magic that accept takes
// (accept gets the line without its newline).
func NewLineScanner(magic string, accept func(line []byte) bool) *LineScanner {
	return &LineScanner{magic: []byte(magic), accept: accept}
}

// Feed scans p. Once a line is taken, it returns the line (without its
// newline), the bytes of p after it, and true; the scanner is then reset.
func (s *LineScanner) Feed(p []byte) (line, rest []byte, found bool) {
	buf := append(s.pending, p...)
	s.pending = nil
	for {
		i := bytes.Index(buf, s.magic)
		if i < 0 {
			// Keep what may be the start of the magic.
			keep := 0
			for k := min(len(buf), len(s.magic)-1); k > 0; k-- {
				if bytes.HasSuffix(buf, s.magic[:k]) {
					keep = k
					break
				}
			}
			s.pending = append([]byte(nil), buf[len(buf)-keep:]...)
			return nil, nil, false
		}
		buf = buf[i:]
		j := bytes.IndexByte(buf, '\n')
		switch {
		case j < 0 && len(buf) < MaxLine:
			s.pending = append([]byte(nil), buf...)
			return nil, nil, false
		case j >= 0 && j < MaxLine && s.accept(buf[:j]):
			return append([]byte(nil), buf[:j]...), buf[j+1:], true
		}
		// Too long, or not taken: look again after this magic's first byte.
		buf = buf[1:]
	}
}
