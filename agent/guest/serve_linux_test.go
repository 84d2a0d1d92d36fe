//go:build linux

package guest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/sonix-run/sonix-run/agent/transport"
	"github.com/sonix-run/sonix-run/agent/wire"
)

func checkGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines left running:\n%s", runtime.NumGoroutine()-base, buf[:runtime.Stack(buf, true)])
				return
			}
			// Polling is the only way to observe goroutines ending.
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// hostileHost serves the real guest code and gives the test a raw yamux
// client session to it, after the handshake.
func hostileHost(t *testing.T) *yamux.Session {
	t.Helper()
	hostConn, guestConn := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, guestConn, Options{}) }()
	answer(t, hostConn, nil)
	ys, err := yamux.Client(hostConn, transport.YamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ys.Close()
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return ys
}

// answer reads the agent's preamble from the host's side of the port and
// answers it, after writing before.
func answer(t *testing.T, hostConn net.Conn, before []byte) string {
	t.Helper()
	hostConn.SetDeadline(time.Now().Add(10 * time.Second))
	defer hostConn.SetDeadline(time.Time{})
	line := make([]byte, len(transport.AgentPreamble(transport.NewSessionID())))
	if _, err := io.ReadFull(hostConn, line); err != nil {
		t.Fatalf("reading the preamble: %v", err)
	}
	l, err := transport.ParseLine(line[:len(line)-1], transport.AgentMagic)
	if err != nil || l.Version != wire.Version || line[len(line)-1] != '\n' {
		t.Fatalf("preamble %q: %v", line, err)
	}
	if _, err := hostConn.Write(append(before, transport.HostAck(l.Token)...)); err != nil {
		t.Fatal(err)
	}
	return l.Token
}

type rawStream struct {
	net.Conn
	r *wire.Reader
}

func open(t *testing.T, ys *yamux.Session) *rawStream {
	t.Helper()
	st, err := ys.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawStream{st, wire.NewReader(st)}
}

func (s *rawStream) send(ft wire.FrameType, p []byte) {
	s.Write(wire.AppendFrame(nil, ft, p))
}

func (s *rawStream) request(t *testing.T, req string) {
	t.Helper()
	s.send(wire.FrameRequest, []byte(req))
}

func execRequest(t *testing.T, e wire.ExecRequest) string {
	b, err := wire.EncodeRequest(&wire.Request{Version: wire.Version, Op: wire.OpExec, Exec: &e})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// expectError reads frames up to an error frame and checks its message.
func (s *rawStream) expectError(t *testing.T, want string) {
	t.Helper()
	for {
		f, err := s.r.Next()
		if err != nil {
			t.Fatalf("no error frame (want %q): %v", want, err)
		}
		switch f.Type {
		case wire.FrameError:
			e, err := wire.DecodeError(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(e.Message, want) {
				t.Fatalf("error %q, want %q", e.Message, want)
			}
			return
		case wire.FrameExit:
			t.Fatalf("an exit frame where an error %q was expected", want)
		}
	}
}

func TestHostileHostRequests(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	for _, tc := range []struct {
		name, req string
		first     wire.FrameType
		want      string
	}{
		{"not a request", "", wire.FrameStdin, "the first frame must be a request frame, not stdin"},
		{"version 1", `{"version":1,"op":"hello"}`, wire.FrameRequest, "protocol version 1 not supported"},
		{"stdin of no command", `{"version":2,"op":"stdin","stdin":{"exec":4000}}`, wire.FrameRequest, "no command 4000 runs"},
		{"unknown op", `{"version":2,"op":"format-disk"}`, wire.FrameRequest, `op "format-disk" unknown`},
		{"unknown field", `{"version":2,"op":"hello","sudo":true}`, wire.FrameRequest, `unknown field "sudo"`},
		{"not JSON", `{"version":2,`, wire.FrameRequest, "request:"},
		{"trailing data", `{"version":2,"op":"hello"} {}`, wire.FrameRequest, "data after the JSON value"},
		{"exec without argv", `{"version":2,"op":"exec","exec":{}}`, wire.FrameRequest, "neither argv nor shell"},
		{"argv not base64", `{"version":2,"op":"exec","exec":{"argv":["%%%"]}}`, wire.FrameRequest, "not valid base64"},
		{"signal in the request", `{"version":2,"op":"exec","exec":{"argv":["eA=="],"kill_grace_ms":-5}}`, wire.FrameRequest, "kill grace -5 ms out of range"},
		{"rows without tty", `{"version":2,"op":"exec","exec":{"argv":["eA=="],"rows":5}}`, wire.FrameRequest, "rows and cols need tty"},
		{"huge terminal", `{"version":2,"op":"exec","exec":{"argv":["eA=="],"tty":true,"rows":50000}}`, wire.FrameRequest, "out of range"},
		{"hello with exec", `{"version":2,"op":"hello","exec":{"argv":["eA=="]}}`, wire.FrameRequest, `must not have the field "exec"`},
		{"put without path", `{"version":2,"op":"put"}`, wire.FrameRequest, `needs the field "put"`},
		{"relative put", `{"version":2,"op":"put","put":{"path":"eA=="}}`, wire.FrameRequest, "not absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, ys)
			defer s.Close()
			if tc.first == wire.FrameRequest {
				s.request(t, tc.req)
			} else {
				s.send(tc.first, []byte("x"))
			}
			s.expectError(t, tc.want)
		})
	}
	// A header over the bound is not an error frame's matter: the guest
	// ends that stream.
	s := open(t, ys)
	rawHdr := []byte{byte(wire.FrameRequest), 0xff, 0xff, 0xff, 0xff}
	s.Write(rawHdr)
	if _, err := s.r.Next(); err != io.EOF {
		t.Fatalf("oversized request: %v, want the stream closed", err)
	}
	s.Close()
}

// startedCommand starts a shell command that reports its pid, and
// returns the stream and the pid.
func startedCommand(t *testing.T, ys *yamux.Session, e wire.ExecRequest) (*rawStream, int) {
	t.Helper()
	s := open(t, ys)
	s.request(t, execRequest(t, e))
	f, err := s.r.Next()
	if err != nil || f.Type != wire.FrameStarted {
		t.Fatalf("started: %v %v", f.Type, err)
	}
	f, err = s.r.Next()
	if err != nil || f.Type != wire.FrameStdout {
		t.Fatalf("pid: %v %v", f.Type, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(f.Payload)))
	if err != nil {
		t.Fatalf("pid %q", f.Payload)
	}
	return s, pid
}

func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	// A zombie is gone too: it has ended, its parent has not reaped it.
	return err != nil || strings.Contains(string(b), ") Z ")
}

func TestHostileHostDuringExec(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	long := wire.ExecRequest{Shell: "echo $$; exec sleep 60", KillGraceMillis: 200, Stdin: true}
	for _, tc := range []struct {
		name string
		act  func(s *rawStream)
		want string
	}{
		{"unknown frame type", func(s *rawStream) { s.send(9, nil) }, "frame type 9 unknown"},
		{"a guest frame", func(s *rawStream) { s.send(wire.FrameExit, make([]byte, 5)) }, "unexpected exit frame in an exec"},
		{"stdin on the command's stream", func(s *rawStream) { s.send(wire.FrameStdin, []byte("x")) }, "a command's input goes on its stdin stream"},
		{"stdin-eof on the command's stream", func(s *rawStream) { s.send(wire.FrameStdinEOF, nil) }, "unexpected stdin-eof frame"},
		{"close-output of fd 3", func(s *rawStream) { s.send(wire.FrameCloseOutput, []byte{3}) }, "close-output frame 03"},
		{"signal 0", func(s *rawStream) { s.send(wire.FrameSignal, []byte{0}) }, "signal 0 out of range 1-64"},
		{"signal 65", func(s *rawStream) { s.send(wire.FrameSignal, []byte{65}) }, "signal 65 out of range 1-64"},
		{"resize without a terminal", func(s *rawStream) { s.send(wire.FrameResize, []byte{0, 10, 0, 10}) }, "the command has no terminal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, pid := startedCommand(t, ys, long)
			defer s.Close()
			start := time.Now()
			tc.act(s)
			s.expectError(t, tc.want)
			if !gone(pid) {
				t.Errorf("the command (pid %d) still runs after the error", pid)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestHostGoneEndsCommand(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	// The host closes the stream: SIGTERM.
	s, pid := startedCommand(t, ys, wire.ExecRequest{Shell: "echo $$; exec sleep 60"})
	s.Close()
	waitGone(t, pid, 5*time.Second)
	// The whole session ends, with a command that ignores SIGTERM: SIGKILL
	// after the grace.
	s, pid = startedCommand(t, ys, wire.ExecRequest{Shell: "trap '' TERM; echo $$; while :; do sleep 0.05; done", KillGraceMillis: 300})
	_ = s
	ys.Close()
	waitGone(t, pid, 5*time.Second)
}

func waitGone(t *testing.T, pid int, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs after %v", pid, bound)
		}
		// Polling: a process's end gives this test no event.
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKillRequestEndsCommand(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	s, pid := startedCommand(t, ys, wire.ExecRequest{Shell: "echo $$; exec sleep 60"})
	defer s.Close()
	s.send(wire.FrameKill, nil)
	for {
		f, err := s.r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == wire.FrameExit {
			e, err := wire.DecodeExit(f.Payload)
			if err != nil || e.Status != 143 || e.Signal != 15 {
				t.Fatalf("exit %+v %v, want 143 by SIGTERM", e, err)
			}
			break
		}
	}
	if !gone(pid) {
		t.Error("still runs")
	}
}

func TestPutRefusesHostileArchive(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	outer := t.TempDir()
	dst := filepath.Join(outer, "dst")
	os.Mkdir(dst, 0o755)
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	tw.WriteHeader(&tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "top/../../evil", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	s := open(t, ys)
	defer s.Close()
	b, _ := json.Marshal(wire.Request{Version: wire.Version, Op: wire.OpPut, Put: &wire.PathRequest{Path: wire.ByteString(dst)}})
	s.request(t, string(b))
	if f, err := s.r.Next(); err != nil || f.Type != wire.FrameStarted {
		t.Fatalf("%v %v", f.Type, err)
	}
	s.send(wire.FrameStdin, archive.Bytes())
	s.send(wire.FrameStdinEOF, nil)
	s.expectError(t, `archive entry "top/../../evil": empty, "." and ".." components are refused`)
	if _, err := os.Lstat(filepath.Join(outer, "evil")); err == nil {
		t.Fatal("written outside the destination")
	}
}

func TestServeEnds(t *testing.T) {
	checkGoroutines(t)
	// A port whose host side is not connected takes no preamble.
	hostConn, guestConn := net.Pipe()
	hostConn.Close()
	if err := Serve(context.Background(), guestConn, Options{}); !errors.Is(err, ErrNoHost) {
		t.Fatalf("Serve on a port without a host: %v, want ErrNoHost", err)
	}
	// The host hangs up before answering.
	hostConn, guestConn = net.Pipe()
	go func() {
		io.ReadFull(hostConn, make([]byte, len(transport.AgentPreamble(transport.NewSessionID()))))
		hostConn.Close()
	}()
	if err := Serve(context.Background(), guestConn, Options{}); !errors.Is(err, ErrNoHost) {
		t.Fatalf("Serve, the host hanging up before answering: %v, want ErrNoHost", err)
	}
	// Garbage from the host after its answer ends the session, naming it;
	// the host's resync line ends it with ErrHostResync.
	for _, tc := range []struct {
		after []byte
		check func(error) bool
	}{
		{[]byte("GET / HTTP/1.1\r\n\r\n"), func(err error) bool {
			return err != nil && strings.Contains(err.Error(), `the host sent bytes that are not yamux: "GET / HTTP/1.1\r\n\r\n"`)
		}},
		{transport.HostResync(), func(err error) bool { return errors.Is(err, ErrHostResync) }},
	} {
		host, guestConn := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- Serve(context.Background(), guestConn, Options{}) }()
		answer(t, host, nil)
		start := time.Now()
		host.Write(tc.after)
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, host)
		}()
		select {
		case err := <-done:
			if !tc.check(err) {
				t.Errorf("Serve after %q: %v", tc.after, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Serve did not end after %q", tc.after)
		}
		t.Logf("%q: ended after %v", tc.after, time.Since(start))
		host.Close()
		<-drained
	}
	// An answer naming this preamble in another version.
	hostConn, guestConn = net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), guestConn, Options{}) }()
	line := make([]byte, len(transport.AgentPreamble(transport.NewSessionID())))
	io.ReadFull(hostConn, line)
	l, _ := transport.ParseLine(line[:len(line)-1], transport.AgentMagic)
	hostConn.Write([]byte("SONIX-RUN-HOST 3 " + l.Token + "\n"))
	if err := <-done; err == nil || err.Error() != "the host answered in protocol version 3; this agent speaks 2" {
		t.Fatalf("Serve, the host answering in version 3: %v", err)
	}
	hostConn.Close()
	// ctx ends it, while it waits for the host's answer too.
	for _, answered := range []bool{false, true} {
		idleHost, guestConn := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, guestConn, Options{}) }()
		if answered {
			answer(t, idleHost, nil)
		} else {
			io.ReadFull(idleHost, make([]byte, 10))
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, idleHost)
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve after ctx (answered %v): %v", answered, err)
		}
		idleHost.Close()
		<-drained
	}
}

// TestServeSkipsStaleBytes: before the host's answer the port may hold
// what the host sent to an earlier agent: yamux frames of a dead session
// (here a whole exec request, which must not run), answers to other
// preambles, a resync line. The agent skips all of it.
func TestServeSkipsStaleBytes(t *testing.T) {
	checkGoroutines(t)
	marker := filepath.Join(t.TempDir(), "ran")
	req := execRequest(t, wire.ExecRequest{Argv: wire.ByteStrings([]string{"touch", marker})})
	var stale bytes.Buffer
	// A yamux client of an earlier session: its SYN and the request.
	old, oldGuest := net.Pipe()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(&stale, oldGuest)
	}()
	oys, _ := yamux.Client(old, transport.YamuxConfig())
	st, err := oys.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write(wire.AppendFrame(nil, wire.FrameRequest, []byte(req)))
	oys.Close()
	<-copied
	if stale.Len() < len(req) {
		t.Fatalf("only %d stale bytes", stale.Len())
	}
	staleBytes := append(append(stale.Bytes(), transport.HostAck(transport.NewSessionID())...), transport.HostResync()...)
	staleBytes = append(staleBytes, "SONIX-RUN-HOST 1 "...) // a line cut short

	hostConn, guestConn := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, guestConn, Options{}) }()
	defer func() {
		cancel()
		<-served
	}()
	answer(t, hostConn, staleBytes)
	ys, err := yamux.Client(hostConn, transport.YamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ys.Close()
	s := open(t, ys)
	s.request(t, `{"version":2,"op":"hello"}`)
	if f, err := s.r.Next(); err != nil || f.Type != wire.FrameReply {
		t.Fatalf("hello: %v %v", f.Type, err)
	}
	s.Close()
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the stale request ran")
	}
}

// started reads up to the started frame and returns the command's id.
func (s *rawStream) started(t *testing.T) uint32 {
	t.Helper()
	f, err := s.r.Next()
	if err != nil || f.Type != wire.FrameStarted {
		t.Fatalf("started: %v %v", f.Type, err)
	}
	id, err := wire.DecodeStarted(f.Payload, true)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// output reads the command's frames to its exit and returns its stdout,
// stderr and status.
func (s *rawStream) output(t *testing.T) (string, string, wire.Exit) {
	t.Helper()
	var out, errb []byte
	for {
		f, err := s.r.Next()
		if err != nil {
			t.Fatalf("before the exit frame: %v (stdout %q, stderr %q)", err, out, errb)
		}
		switch f.Type {
		case wire.FrameStdout:
			out = append(out, f.Payload...)
		case wire.FrameStderr:
			errb = append(errb, f.Payload...)
		case wire.FrameExit:
			e, err := wire.DecodeExit(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return string(out), string(errb), e
		default:
			t.Fatalf("unexpected %s frame", f.Type)
		}
	}
}

func stdinRequest(id uint32) string {
	b, _ := wire.EncodeRequest(&wire.Request{Version: wire.Version, Op: wire.OpStdin, Stdin: &wire.StdinRequest{Exec: id}})
	return string(b)
}

// TestStdinStream: a command's input comes on a stream of its own, which
// names the command; the command's stream carries only control frames.
func TestStdinStream(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	s := open(t, ys)
	defer s.Close()
	s.request(t, execRequest(t, wire.ExecRequest{Argv: wire.ByteStrings([]string{"cat"}), Stdin: true}))
	id := s.started(t)
	in := open(t, ys)
	defer in.Close()
	in.request(t, stdinRequest(id))
	in.send(wire.FrameStdin, []byte("one "))
	in.send(wire.FrameStdin, []byte("two"))
	in.send(wire.FrameStdinEOF, nil)
	if out, _, e := s.output(t); out != "one two" || e.Status != 0 {
		t.Fatalf("cat: %q, status %d", out, e.Status)
	}
	// The stdin stream of a command that has ended is refused.
	late := open(t, ys)
	defer late.Close()
	late.request(t, stdinRequest(id))
	late.expectError(t, "ended") // "no command N runs (it has ended)", or "command N has ended" just before
}

func TestHostileHostStdinStreams(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	commands := map[uint32]*rawStream{}
	for _, tc := range []struct {
		name  string
		stdin bool
		act   func(t *testing.T, id uint32, first *rawStream) *rawStream
		want  string
	}{
		{"a second stdin stream", true, func(t *testing.T, id uint32, first *rawStream) *rawStream {
			first.request(t, stdinRequest(id))
			first.send(wire.FrameStdin, []byte("x"))
			// The first is attached once its byte has come through.
			if f, err := commands[id].r.Next(); err != nil || string(f.Payload) != "x" {
				t.Fatalf("%v %q %v", f.Type, f.Payload, err)
			}
			second := open(t, ys)
			second.request(t, stdinRequest(id))
			return second
		}, "already has its stdin stream"},
		{"a command without stdin", false, func(t *testing.T, id uint32, first *rawStream) *rawStream {
			first.request(t, stdinRequest(id))
			return first
		}, "takes no input"},
		{"a signal frame on a stdin stream", true, func(t *testing.T, id uint32, first *rawStream) *rawStream {
			first.request(t, stdinRequest(id))
			first.send(wire.FrameSignal, []byte{9})
			return first
		}, "unexpected signal frame on a stdin stream"},
		{"an oversized stdin frame", true, func(t *testing.T, id uint32, first *rawStream) *rawStream {
			first.request(t, stdinRequest(id))
			first.Write([]byte{byte(wire.FrameStdin), 0xff, 0xff, 0xff, 0xff})
			return first
		}, "exceeds the 262144-byte bound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, ys)
			defer s.Close()
			shell := "dd bs=1 count=1 2>/dev/null; cat >/dev/null; echo ended"
			if !tc.stdin {
				shell = "exec sleep 60"
			}
			s.request(t, execRequest(t, wire.ExecRequest{Shell: wire.ByteString(shell), Stdin: tc.stdin}))
			id := s.started(t)
			commands[id] = s
			first := open(t, ys)
			defer first.Close()
			got := tc.act(t, id, first)
			defer got.Close()
			start := time.Now()
			got.expectError(t, tc.want)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
			if !tc.stdin {
				s.send(wire.FrameKill, nil)
				if _, _, e := s.output(t); e.Status != 143 {
					t.Fatalf("killed: status %d", e.Status)
				}
				return
			}
			// A broken stdin stream ends the command's input; a second one
			// leaves the first in place, whose end ends it.
			first.send(wire.FrameStdinEOF, nil)
			if out, _, e := s.output(t); out != "ended\n" || e.Status != 0 {
				t.Fatalf("the command: %q, status %d", out, e.Status)
			}
		})
	}
}

// TestCloseFrames: close-stdin ends the input of a command that has no
// stdin stream; close-output closes the agent's end of an output, so the
// command's next write there gets EPIPE, and SIGPIPE, as it would
// locally, while the other output goes on.
func TestCloseFrames(t *testing.T) {
	checkGoroutines(t)
	ys := hostileHost(t)
	s := open(t, ys)
	s.request(t, execRequest(t, wire.ExecRequest{Shell: "cat; echo eof", Stdin: true}))
	s.started(t)
	s.send(wire.FrameCloseStdin, nil)
	if out, _, e := s.output(t); out != "eof\n" || e.Status != 0 {
		t.Fatalf("after close-stdin: %q, status %d", out, e.Status)
	}
	s.Close()

	s = open(t, ys)
	defer s.Close()
	s.request(t, execRequest(t, wire.ExecRequest{Shell: `echo ready; while :; do echo x; done; echo never`}))
	s.started(t)
	f, err := s.r.Next()
	if err != nil || f.Type != wire.FrameStdout {
		t.Fatalf("%v %v", f.Type, err)
	}
	s.send(wire.FrameCloseOutput, []byte{wire.OutputStdout})
	_, errs, e := s.output(t)
	if e.Status != 141 || e.Signal != 13 {
		t.Fatalf("the command after its stdout closed: status %d (stderr %q), want 141 (SIGPIPE)", e.Status, errs)
	}
	s = open(t, ys)
	defer s.Close()
	s.request(t, execRequest(t, wire.ExecRequest{Shell: `echo ready >&2; (while :; do echo x >&2; done); echo "stderr writer: $?"`}))
	s.started(t)
	if f, err := s.r.Next(); err != nil || f.Type != wire.FrameStderr {
		t.Fatalf("%v %v", f.Type, err)
	}
	s.send(wire.FrameCloseOutput, []byte{wire.OutputStderr})
	if out, _, e := s.output(t); out != "stderr writer: 141\n" || e.Status != 0 {
		t.Fatalf("after stderr closed: stdout %q, status %d", out, e.Status)
	}
}
