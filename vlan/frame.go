package vlan

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The framing of QEMU's stream netdev (net/stream.c in QEMU 7.2; the same as
// the older -netdev socket): each Ethernet frame, without its FCS, preceded
// by its length as a 4-byte big-endian integer.
const (
	headerLen = 4
	// MinFrame is an Ethernet header: destination, source, EtherType.
	MinFrame = 14
	// MaxFrame is the largest frame the switch accepts. QEMU itself accepts
	// up to 4096+65536 bytes; no guest NIC sends more than 65535.
	MaxFrame = 65535
)

// FrameLengthError is a length prefix outside [MinFrame, MaxFrame]: the peer
// does not speak the protocol, and the stream cannot be resynchronised.
type FrameLengthError struct{ Length uint32 }

func (e *FrameLengthError) Error() string {
	return fmt.Sprintf("frame length %d is outside %d..%d: not QEMU's stream framing", e.Length, MinFrame, MaxFrame)
}

// readFrame reads one frame and returns it with its length prefix, ready to
// be written to another port as it is (and shared, read-only, by all ports
// it goes to).
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err // io.EOF: the peer closed between frames
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < MinFrame || n > MaxFrame {
		return nil, &FrameLengthError{n}
	}
	buf := make([]byte, headerLen+int(n))
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[headerLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("frame of %d bytes cut short: %w", n, err)
	}
	return buf, nil
}

// encodeFrame prefixes frame with its length.
func encodeFrame(frame []byte) []byte {
	buf := make([]byte, headerLen+len(frame))
	binary.BigEndian.PutUint32(buf, uint32(len(frame)))
	copy(buf[headerLen:], frame)
	return buf
}

// The parts of a frame with its length prefix.
func frameDst(buf []byte) []byte { return buf[headerLen : headerLen+6] }
func frameSrc(buf []byte) []byte { return buf[headerLen+6 : headerLen+12] }

// isUnicast tells an individual address from a group (multicast or
// broadcast) one: the I/G bit, the lowest bit of the first octet.
func isUnicast(mac []byte) bool { return mac[0]&1 == 0 }
