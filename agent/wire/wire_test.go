package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	frames := []Frame{
		{FrameRequest, []byte(`{"version":2,"op":"hello"}`)},
		{FrameStdin, bytes.Repeat([]byte{0xff}, MaxData)},
		{FrameStdinEOF, nil},
		{FrameSignal, []byte{15}},
		{FrameExit, []byte{0, 0, 0, 137, 9}},
	}
	for _, f := range frames {
		if err := w.Write(f.Type, f.Payload); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	for _, want := range frames {
		got, err := r.Next()
		if err != nil || got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got %v %d bytes, %v; want %v", got.Type, len(got.Payload), err, want.Type)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}

func TestWriterRefuses(t *testing.T) {
	w := NewWriter(io.Discard)
	for _, tc := range []struct {
		t    FrameType
		p    []byte
		want string
	}{
		{FrameStdout, make([]byte, MaxData+1), "stdout frame of 262145 bytes exceeds the 262144-byte bound"},
		{FrameStdout, nil, "stdout frame of 0 bytes is shorter than 1"},
		{FrameSignal, []byte{1, 2}, "signal frame of 2 bytes: it must have 1"},
		{0x7f, nil, "frame type 127 unknown"},
	} {
		err := w.Write(tc.t, tc.p)
		var v *ViolationError
		if err == nil || err.Error() != tc.want || !errors.As(err, &v) {
			t.Errorf("%v: %v, want %q", tc.t, err, tc.want)
		}
	}
}

func TestWriteData(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	b := append(make([]byte, HeaderSize), "payload"...)
	if err := w.WriteData(FrameStdout, b); err != nil {
		t.Fatal(err)
	}
	f, err := NewReader(&buf).Next()
	if err != nil || f.Type != FrameStdout || string(f.Payload) != "payload" {
		t.Fatalf("%v %q %v", f.Type, f.Payload, err)
	}
	for _, tc := range []struct {
		b    []byte
		want string
	}{
		{make([]byte, 3), "needs 5 bytes of room"},
		{make([]byte, HeaderSize), "stdout frame of 0 bytes is shorter than 1"},
		{make([]byte, HeaderSize+MaxData+1), "exceeds the 262144-byte bound"},
	} {
		if err := w.WriteData(FrameStdout, tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d bytes: %v, want %q", len(tc.b), err, tc.want)
		}
	}
}

func TestReaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"unknown type", []byte{9, 0, 0, 0, 0}, "frame type 9 unknown"},
		{"over the bound", []byte{byte(FrameRequest), 0, 0x10, 0, 1}, "request frame of 1048577 bytes exceeds the 1048576-byte bound"},
		{"cut header", []byte{byte(FrameStdout), 0}, "the stream ended inside a frame"},
		{"cut payload", []byte{byte(FrameStdout), 0, 0, 0, 9, 'a'}, "the stream ended inside the stdout frame"},
		{"fixed size", []byte{byte(FrameResize), 0, 0, 0, 3, 1, 2, 3}, "resize frame of 3 bytes: it must have 4"},
	} {
		_, err := NewReader(bytes.NewReader(tc.in)).Next()
		var v *ViolationError
		if err == nil || err.Error() != tc.want || !errors.As(err, &v) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestExit(t *testing.T) {
	for _, tc := range []struct {
		e   Exit
		err string
	}{
		{Exit{0, 0}, ""}, {Exit{255, 0}, ""}, {Exit{137, 9}, ""}, {Exit{192, 64}, ""},
		{Exit{256, 0}, "exit status 256 out of range 0-255"},
		{Exit{-1, 0}, "exit status -1 out of range 0-255"},
		{Exit{137, 0}, ""},
		{Exit{130, 9}, "exit status 130 for signal 9: it must be 137"},
		{Exit{200, 72}, "exit signal 72 out of range 1-64"},
	} {
		b, err := tc.e.Encode()
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%+v: %v, want %q", tc.e, err, tc.err)
			}
			continue
		}
		got, err := DecodeExit(b)
		if err != nil || got != tc.e {
			t.Errorf("%+v: round trip %+v %v", tc.e, got, err)
		}
	}
}

func TestParseUser(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want UserSpec
		err  string
	}{
		{"alice", UserSpec{Name: "alice"}, ""},
		{"1000", UserSpec{UID: 1000, NumericUID: true}, ""},
		{"1000:100", UserSpec{UID: 1000, NumericUID: true, HasGroup: true, GID: 100, NumericGID: true}, ""},
		{"alice:wheel", UserSpec{Name: "alice", HasGroup: true, Group: "wheel"}, ""},
		{"machine$", UserSpec{Name: "machine$"}, ""},
		{"4294967295", UserSpec{}, "not a valid numeric id"},
		{"12a", UserSpec{}, "not a valid numeric id"},
		{"a b", UserSpec{}, "which a user or group name cannot"},
		{"a$b", UserSpec{}, "which a user or group name cannot"},
		{"alice:", UserSpec{}, "group: empty name"},
		{":wheel", UserSpec{}, "empty name"},
		{strings.Repeat("a", 300), UserSpec{}, "exceeds the 256-byte bound"},
	} {
		got, err := ParseUser(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v", tc.in, got, err)
		}
	}
}

func TestRequestValidate(t *testing.T) {
	ok := func(e ExecRequest) *Request { return &Request{Version: Version, Op: OpExec, Exec: &e} }
	for _, tc := range []struct {
		name string
		r    *Request
		err  string
	}{
		{"hello", &Request{Version: 2, Op: OpHello}, ""},
		{"argv", ok(ExecRequest{Argv: []ByteString{"ls", "\xff"}}), ""},
		{"shell with tty", ok(ExecRequest{Shell: "x", TTY: true, Rows: 1, Cols: MaxWinSize}), ""},
		{"both", ok(ExecRequest{Argv: []ByteString{"ls"}, Shell: "ls"}), "both argv and shell"},
		{"empty argv0", ok(ExecRequest{Argv: []ByteString{""}}), "argv[0] is empty"},
		{"NUL in argv", ok(ExecRequest{Argv: []ByteString{"a", "b\x00"}}), "argv[1] holds a NUL byte"},
		{"env without =", ok(ExecRequest{Shell: "x", Env: []ByteString{"FOO"}}), `env[0] "FOO" is not KEY=VALUE`},
		{"env empty name", ok(ExecRequest{Shell: "x", Env: []ByteString{"=x"}}), "has an empty name"},
		{"relative dir", ok(ExecRequest{Shell: "x", Dir: "tmp"}), `dir "tmp" is not absolute`},
		{"long dir", ok(ExecRequest{Shell: "x", Dir: ByteString("/" + strings.Repeat("a", MaxPath))}), "exceeds the 4096-byte bound"},
		{"cols over", ok(ExecRequest{Shell: "x", TTY: true, Cols: MaxWinSize + 1}), "out of range"},
		{"grace over", ok(ExecRequest{Shell: "x", KillGraceMillis: MaxKillWait.Milliseconds() + 1}), "kill grace"},
		{"bad user", ok(ExecRequest{Shell: "x", User: "a:b:c"}), "which a user or group name cannot"},
		{"version 0", &Request{Op: OpHello}, "protocol version 0 not supported"},
		{"op", &Request{Version: 2, Op: "rm"}, `op "rm" unknown`},
		{"get path", &Request{Version: 2, Op: OpGet, Get: &PathRequest{Path: ""}}, "get: path is empty"},
		{"stdin", &Request{Version: 2, Op: OpStdin, Stdin: &StdinRequest{Exec: 1}}, ""},
		{"stdin of command 0", &Request{Version: 2, Op: OpStdin, Stdin: &StdinRequest{}}, "exec id 0 names no command"},
		{"stdin without its field", &Request{Version: 2, Op: OpStdin}, `needs the field "stdin"`},
		{"version 1", &Request{Version: 1, Op: OpHello}, "protocol version 1 not supported (this side speaks 2)"},
	} {
		err := tc.r.Validate()
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestRequestBytesExact(t *testing.T) {
	r := &Request{Version: 2, Op: OpExec, Exec: &ExecRequest{Argv: []ByteString{"printf", "\xff\xfe", "ünï"}, Env: []ByteString{"K=\x80"}, Dir: "/\xc3"}}
	b, err := EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestErrorReply(t *testing.T) {
	e, err := DecodeError(EncodeError(127, "bad \xff"+strings.Repeat("é", MaxMessage)))
	if err != nil || e.Status != 127 || len(e.Message) > MaxMessage || !strings.HasSuffix(e.Message, "...") {
		t.Fatalf("%v %v", e, err)
	}
}

// frameSeeds are byte streams for FuzzFrame's corpus.
func frameSeeds() [][]byte {
	var seeds [][]byte
	for _, f := range []Frame{
		{FrameRequest, []byte(`{"version":2,"op":"exec","exec":{"argv":["bHM="]}}`)},
		{FrameStdout, []byte("hello")},
		{FrameExit, []byte{0, 0, 0, 7, 0}},
		{FrameExit, []byte{0, 0, 1, 0, 0}},
		{FrameResize, []byte{0, 24, 0, 80}},
		{FrameSignal, []byte{2}},
		{FrameStarted, EncodeStarted(7)},
		{FrameCloseOutput, []byte{OutputStdout}},
		{FrameCloseStdin, nil},
		{FrameError, EncodeError(127, "not found")},
		{FrameReply, []byte(`{"agent_version":"x","protocol_version":2,"pid":1}`)},
	} {
		seeds = append(seeds, AppendFrame(nil, f.Type, f.Payload))
	}
	return append(seeds, []byte{9, 0, 0, 0, 0}, []byte{1, 255, 255, 255, 255}, []byte{0x12, 0, 0})
}

// FuzzFrame decodes frames and their payloads from arbitrary bytes: no
// panic, no allocation beyond the bounds, and whatever decodes encodes
// back to the same bytes.
func FuzzFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 100; i++ {
			fr, err := r.Next()
			if err != nil {
				var v *ViolationError
				if err != io.EOF && !errors.As(err, &v) {
					t.Fatalf("an error that is neither EOF nor a violation: %v", err)
				}
				return
			}
			if err := CheckHeader(fr.Type, uint32(len(fr.Payload))); err != nil {
				t.Fatalf("Next returned a frame CheckHeader refuses: %v", err)
			}
			var buf bytes.Buffer
			if err := NewWriter(&buf).Write(fr.Type, fr.Payload); err != nil {
				t.Fatalf("re-encoding: %v", err)
			}
			decodePayload(t, fr)
		}
	})
}

func decodePayload(t *testing.T, fr Frame) {
	switch fr.Type {
	case FrameRequest:
		if r, err := DecodeRequest(fr.Payload); err == nil {
			checkRequestRoundTrip(t, r)
		}
	case FrameExit:
		if e, err := DecodeExit(fr.Payload); err == nil {
			b, err := e.Encode()
			if err != nil || !bytes.Equal(b, fr.Payload) {
				t.Fatalf("exit %+v re-encodes to %x, %v", e, b, err)
			}
		}
	case FrameSignal:
		if s, err := DecodeSignal(fr.Payload); err == nil && (s < 1 || s > MaxSignal) {
			t.Fatalf("signal %d accepted", s)
		}
	case FrameResize:
		if w, err := DecodeResize(fr.Payload); err == nil && w.Validate() != nil {
			t.Fatalf("size %+v accepted", w)
		}
	case FrameError:
		if e, err := DecodeError(fr.Payload); err == nil && (e.Status < 0 || e.Status > 255 || e.Message == "") {
			t.Fatalf("error %+v accepted", e)
		}
	case FrameReply:
		if h, err := DecodeHello(fr.Payload); err == nil && h.ProtocolVersion != Version {
			t.Fatalf("hello %+v accepted", h)
		}
	case FrameStarted:
		if n, err := DecodeStarted(fr.Payload, true); err == nil && n == 0 {
			t.Fatalf("command id 0 accepted for an exec")
		}
		if n, err := DecodeStarted(fr.Payload, false); err == nil && n != 0 {
			t.Fatalf("command id %d accepted for a copy", n)
		}
	case FrameCloseOutput:
		if o, err := DecodeCloseOutput(fr.Payload); err == nil && o != OutputStdout && o != OutputStderr {
			t.Fatalf("output %d accepted", o)
		}
	}
}

func checkRequestRoundTrip(t *testing.T, r *Request) {
	if err := r.Validate(); err != nil {
		t.Fatalf("DecodeRequest returned an invalid request: %v", err)
	}
	b, err := EncodeRequest(r)
	if err != nil {
		t.Fatalf("re-encoding a valid request: %v", err)
	}
	r2, err := DecodeRequest(b)
	if err != nil || !reflect.DeepEqual(r, r2) {
		t.Fatalf("round trip: %+v, %v", r2, err)
	}
}

// FuzzRequest checks request decoding and validation on arbitrary JSON.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"version":2,"op":"hello"}`,
		`{"version":2,"op":"exec","exec":{"argv":["bHM=","LWw="],"env":["QT1i"],"dir":"L3RtcA==","user":"alice:wheel","stdin":true,"tty":true,"rows":24,"cols":80,"kill_grace_ms":100}}`,
		`{"version":2,"op":"exec","exec":{"shell":"ZWNobyBoaQ=="}}`,
		`{"version":2,"op":"put","put":{"path":"L3RtcA=="}}`,
		`{"version":2,"op":"get","get":{"path":"L2V0Yw=="}}`,
		`{"version":2,"op":"poweroff"}`,
		`{"version":2,"op":"stdin","stdin":{"exec":3}}`,
		`{"version":1,"op":"hello"}`,
		`{"version":2,"op":"exec","exec":{"argv":[]}}`,
		`[]`, `null`, `{"version":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err != nil {
			return
		}
		checkRequestRoundTrip(t, r)
		if r.Exec != nil {
			if _, err := json.Marshal(r.Exec); err != nil {
				t.Fatal(err)
			}
		}
	})
}
