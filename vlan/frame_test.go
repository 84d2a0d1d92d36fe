package vlan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestReadFrame(t *testing.T) {
	frame := bytes.Repeat([]byte{0xab}, 60)
	var stream bytes.Buffer
	stream.Write(encodeFrame(frame))
	stream.Write(encodeFrame(frame[:MinFrame]))
	got, err := readFrame(&stream)
	if err != nil || !bytes.Equal(got[headerLen:], frame) || binary.BigEndian.Uint32(got) != 60 {
		t.Fatalf("first frame = %x, %v", got, err)
	}
	if got, err = readFrame(&stream); err != nil || len(got) != headerLen+MinFrame {
		t.Fatalf("second frame = %x, %v", got, err)
	}
	if _, err = readFrame(&stream); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

func TestReadFrameHostile(t *testing.T) {
	hdr := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	for _, tc := range []struct {
		name    string
		in      []byte
		wantLen uint32 // a FrameLengthError with this length, or 0
	}{
		{"over the Ethernet maximum", hdr(MaxFrame + 1), MaxFrame + 1},
		{"huge", hdr(0xffffffff), 0xffffffff},
		{"under a header", hdr(MinFrame - 1), MinFrame - 1},
		{"zero", hdr(0), 0},
		{"cut in the header", []byte{0, 0}, 0},
		{"cut in the frame", append(hdr(100), make([]byte, 50)...), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readFrame(bytes.NewReader(tc.in))
			var fl *FrameLengthError
			switch {
			case err == nil:
				t.Fatal("no error")
			case tc.wantLen != 0 || tc.name == "zero":
				if !errors.As(err, &fl) || fl.Length != tc.wantLen {
					t.Fatalf("err = %v, want a FrameLengthError for %d", err, tc.wantLen)
				}
			case !errors.Is(err, io.ErrUnexpectedEOF):
				t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
}

// FuzzReadFrame: whatever comes from a port, readFrame returns frames
// within the limits that re-encode to exactly the bytes consumed, or an
// error, and never panics.
func FuzzReadFrame(f *testing.F) {
	f.Add(encodeFrame(make([]byte, 14)))
	f.Add(append(encodeFrame(make([]byte, 60)), encodeFrame(make([]byte, 1514))...))
	f.Add([]byte{0, 1, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 0, 0, 13})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var consumed []byte
		for {
			buf, err := readFrame(r)
			if err != nil {
				break
			}
			n := binary.BigEndian.Uint32(buf)
			if n < MinFrame || n > MaxFrame || int(n) != len(buf)-headerLen {
				t.Fatalf("frame of length %d with %d bytes", n, len(buf)-headerLen)
			}
			if !bytes.Equal(encodeFrame(buf[headerLen:]), buf) {
				t.Fatal("frame does not re-encode to itself")
			}
			consumed = append(consumed, buf...)
		}
		if !bytes.HasPrefix(in, consumed) {
			t.Fatal("frames are not a prefix of the input")
		}
	})
}
