package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// DataWriter sends what it is given, in order, as frames of its type of at
// most MaxData bytes; Flush sends the rest, and nothing when there is none.
func TestDataWriter(t *testing.T) {
	data := make([]byte, 3*MaxData+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var out bytes.Buffer
	d := &DataWriter{W: NewWriter(&out), T: FrameStdout}
	for rest := data; len(rest) > 0; {
		k := min(len(rest), 1000+len(rest)%4099)
		if n, err := d.Write(rest[:k]); n != k || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		rest = rest[k:]
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&out)
	var got []byte
	for {
		f, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != FrameStdout || len(f.Payload) == 0 || len(f.Payload) > MaxData {
			t.Fatalf("frame %v of %d bytes", f.Type, len(f.Payload))
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, want the %d given", len(got), len(data))
	}

	// Send replaces WriteData, and its error is Write's.
	boom := errors.New("boom")
	d = &DataWriter{T: FrameStdin, Send: func(ft FrameType, b []byte) error {
		if ft != FrameStdin || len(b) != HeaderSize+MaxData {
			t.Errorf("Send(%v, %d bytes)", ft, len(b))
		}
		return boom
	}}
	if n, err := d.Write(make([]byte, MaxData+1)); n != MaxData || err != boom {
		t.Errorf("Write = %d, %v; want %d, boom", n, err, MaxData)
	}
}
