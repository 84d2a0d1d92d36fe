package agent_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/transport"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// handshake does the agent's side of the handshake on conn at the wire
// level: the preamble, then the host's answer, which must be exactly the
// acknowledgement of that preamble.
func handshake(t testing.TB, conn net.Conn) {
	t.Helper()
	id := transport.NewSessionID()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(transport.AgentPreamble(id)); err != nil {
		t.Fatal(err)
	}
	want := transport.HostAck(id)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the host answered %q (%v), want %q", got, err, want)
	}
}

// fakeGuest is a guest agent under the test's control at the wire level:
// handle gets every stream after its request frame.
func fakeGuest(t *testing.T, handle func(st net.Conn, req *wire.Request)) (*agent.Link, *agent.Client) {
	t.Helper()
	hostConn, guestConn := net.Pipe()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	handshake(t, guestConn)
	ys, err := yamux.Server(guestConn, transport.YamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := ys.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				f, err := wire.NewReader(st).Next()
				if err != nil || f.Type != wire.FrameRequest {
					return
				}
				req, err := wire.DecodeRequest(f.Payload)
				if err != nil {
					t.Errorf("fake guest: %v", err)
					return
				}
				handle(st, req)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		ys.Close()
		wg.Wait()
	})
	return l, agent.NewClient(l.Dial)
}

// raw writes a frame without any checks.
func raw(w io.Writer, t wire.FrameType, payload []byte) {
	w.Write(wire.AppendFrame(nil, t, payload))
}

func rawHeader(w io.Writer, t wire.FrameType, n uint32) {
	h := make([]byte, 5)
	h[0] = byte(t)
	binary.BigEndian.PutUint32(h[1:], n)
	w.Write(h)
}

func exitPayload(status int32, sig byte) []byte {
	b := make([]byte, 5)
	binary.BigEndian.PutUint32(b, uint32(status))
	b[4] = sig
	return b
}

// waitClosed waits for the host to close the stream.
func waitClosed(st net.Conn) { io.Copy(io.Discard, st) }

func TestHostileGuestExec(t *testing.T) {
	for _, tc := range []struct {
		name  string
		act   func(st net.Conn)
		stdin bool
		want  string
	}{
		{"frame over the bound", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			rawHeader(st, wire.FrameStdout, wire.MaxData+1)
			st.Write(make([]byte, 1000))
		}, false, "agent: stream: stdout frame of 262145 bytes exceeds the 262144-byte bound"},
		{"a 4 GiB frame", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			rawHeader(st, wire.FrameStderr, 1<<32-1)
		}, false, "agent: stream: stderr frame of 4294967295 bytes exceeds the 262144-byte bound"},
		{"unknown frame type", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, 9, []byte("x"))
		}, false, "agent: stream: frame type 9 unknown"},
		{"exit status 256", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameExit, exitPayload(256, 0))
		}, false, "agent: exec: exit status 256 out of range 0-255"},
		{"exit status -1", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameExit, exitPayload(-1, 0))
		}, false, "agent: exec: exit status -1 out of range 0-255"},
		{"huge exit status", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameExit, exitPayload(1<<31-1, 0))
		}, false, "agent: exec: exit status 2147483647 out of range 0-255"},
		{"signal that does not match the status", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameExit, exitPayload(130, 9))
		}, false, "exit status 130 for signal 9: it must be 137"},
		{"exit frame of the wrong size", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameExit, []byte{0, 0, 0, 0})
		}, false, "agent: stream: exit frame of 4 bytes: it must have 5"},
		{"stream closed mid-command", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameStdout, []byte("partial"))
		}, false, "agent: exec: the stream closed before the command's exit status came"},
		{"stream closed before starting", func(st net.Conn) {}, false,
			"agent: exec: the guest closed the stream before starting the command"},
		{"stream cut inside a frame", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			rawHeader(st, wire.FrameStdout, 100)
			st.Write([]byte("short"))
		}, false, "agent: stream: the stream ended inside the stdout frame"},
		{"output before started", func(st net.Conn) {
			raw(st, wire.FrameStdout, []byte("early"))
		}, false, "agent: stream: unexpected stdout frame where started or error was expected"},
		{"error frame with a bad status", func(st net.Conn) {
			raw(st, wire.FrameError, []byte(`{"status":300,"message":"x"}`))
		}, false, "error frame: status 300 out of range 0-255"},
		{"error frame with no message", func(st net.Conn) {
			raw(st, wire.FrameError, []byte(`{"status":1,"message":""}`))
		}, false, "error frame: the message must be"},
		{"command id 0", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(0))
		}, false, "started frame: command id 0 for an exec"},
		{"started frame of the wrong size", func(st net.Conn) {
			raw(st, wire.FrameStarted, []byte{0, 0, 1})
		}, true, "agent: stream: started frame of 3 bytes: it must have 4"},
		{"a stdin-ack frame (protocol version 1)", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, 0x16, []byte{0, 0, 0, 5})
		}, true, "agent: stream: frame type 22 unknown"},
		{"a frame from the host's side", func(st net.Conn) {
			raw(st, wire.FrameStarted, wire.EncodeStarted(1))
			raw(st, wire.FrameKill, nil)
		}, false, "agent: stream: unexpected kill frame where output or the exit status was expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
				tc.act(st)
			})
			var stdin io.Reader
			if tc.stdin {
				r, w := io.Pipe() // never written: the guest breaks the protocol first
				defer w.Close()
				stdin = r
			}
			start := time.Now()
			_, err := c.Exec(testContext(t, 30*time.Second), agent.Command{Argv: []string{"x"}}, agent.Stdio{Stdin: stdin})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			// A started command whose stream closed has no status: the
			// verbs' 123, not a failure.
			if started := tc.name == "stream closed mid-command"; errors.Is(err, agent.ErrStatusUnknown) != started {
				t.Errorf("errors.Is(err, ErrStatusUnknown) = %v, want %v", !started, started)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestHostileGuestNeverAnswers(t *testing.T) {
	checkGoroutines(t)
	s, c := fakeGuest(t, func(st net.Conn, req *wire.Request) { waitClosed(st) })
	for _, op := range []string{"hello", "exec", "poweroff", "get", "put"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		var err error
		switch op {
		case "hello":
			_, err = c.Hello(ctx)
		case "exec":
			_, err = c.Exec(ctx, agent.Command{Argv: []string{"x"}}, agent.Stdio{})
		case "poweroff":
			err = c.PowerOff(ctx)
		case "get":
			err = c.CopyFrom(ctx, "/x", t.TempDir())
		case "put":
			err = c.CopyTo(ctx, t.TempDir(), "/x")
		}
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err %v, want the context's deadline", op, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v", op, d)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
}

func TestHostileGuestKilledCommandNeverExits(t *testing.T) {
	checkGoroutines(t)
	// The guest takes the kill request and then says nothing: Exec gives
	// up after the grace and a little.
	kill := make(chan struct{}, 1)
	_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
		raw(st, wire.FrameStarted, wire.EncodeStarted(1))
		r := wire.NewReader(st)
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			if f.Type == wire.FrameKill {
				kill <- struct{}{}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Exec(ctx, agent.Command{Argv: []string{"x"}, KillGrace: 100 * time.Millisecond}, agent.Stdio{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	select {
	case <-kill:
	default:
		t.Error("no kill frame was sent")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v; the grace was 100ms", d)
	}
}

// liveFakeGuest is a link to a guest at the wire level whose session is
// live: the test writes what it likes after the handshake. The guest's
// end reads and discards what the host sends.
func liveFakeGuest(t *testing.T) (*agent.Link, net.Conn) {
	t.Helper()
	hostConn, guestConn := net.Pipe()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	handshake(t, guestConn)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(io.Discard, guestConn)
	}()
	t.Cleanup(func() {
		l.Close()
		guestConn.Close()
		wg.Wait()
	})
	return l, guestConn
}

// TestHostileGuestGarbage: bytes that are not yamux where a frame should
// start inside a session (and are not a new preamble) end the link for
// good, failing pending operations at once.
func TestHostileGuestGarbage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		garbage func() []byte
		want    string
	}{
		{"random bytes", func() []byte {
			g := make([]byte, 4096)
			rand.New(rand.NewSource(1)).Read(g)
			g[0] = 0x42 // not yamux's version 0
			return g
		}, `bytes where a yamux frame should start: "B`},
		{"a preamble cut short", func() []byte { return []byte("SONIX-RUN-AGENT 2 12\n") }, "session id \"12\" is not 32 lowercase hex digits"},
		{"a line without end", func() []byte {
			return append([]byte("SONIX-RUN-AGENT 2 "), bytes.Repeat([]byte("a"), 200)...)
		}, "a line longer than 128 bytes"},
		{"an unknown frame type", func() []byte { return []byte{0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0} }, "a frame of unknown type 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			l, guestConn := liveFakeGuest(t)
			c := agent.NewClient(l.Dial)
			results := make(chan error, 2)
			started := make(chan struct{}, 2)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				started <- struct{}{}
				_, err := c.Hello(ctx)
				results <- err
			}()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				started <- struct{}{}
				_, err := c.Exec(ctx, agent.Command{Argv: []string{"x"}}, agent.Stdio{})
				results <- err
			}()
			<-started
			<-started
			start := time.Now()
			go guestConn.Write(tc.garbage())
			for i := 0; i < 2; i++ {
				select {
				case err := <-results:
					if !errors.Is(err, agent.ErrProtocol) || !strings.Contains(err.Error(), "agent: the guest broke the protocol: ") || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("pending operation: %v", err)
					}
				case <-time.After(2 * time.Second):
					t.Fatal("a pending operation did not return within 2 s of the garbage")
				}
			}
			select {
			case <-l.Done():
			case <-time.After(time.Second):
				t.Fatal("the link did not end")
			}
			t.Logf("ended after %v: %v", time.Since(start), l.Err())
			if _, err := c.Hello(context.Background()); err == nil || err.Error() != l.Err().Error() {
				t.Errorf("an operation after the end: %v", err)
			}
		})
	}
}

func TestHostileGuestOpensStream(t *testing.T) {
	checkGoroutines(t)
	hostConn, guestConn := net.Pipe()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	defer l.Close()
	handshake(t, guestConn)
	ys, _ := yamux.Server(guestConn, transport.YamuxConfig())
	defer ys.Close()
	go func() {
		if st, err := ys.OpenStream(); err == nil {
			st.Write([]byte("hi"))
		}
	}()
	select {
	case <-l.Done():
	case <-time.After(time.Second):
		t.Fatal("the link did not end")
	}
	if err := l.Err(); !errors.Is(err, agent.ErrProtocol) || !strings.Contains(err.Error(), "opened a stream") {
		t.Fatalf("link error %v", err)
	}
}

// TestHostileGuestHangsUp: the port's connection ending (QEMU exited)
// ends the link.
func TestHostileGuestHangsUp(t *testing.T) {
	checkGoroutines(t)
	l, guestConn := liveFakeGuest(t)
	c := agent.NewClient(l.Dial)
	done := make(chan error, 1)
	go func() {
		_, err := c.Hello(context.Background())
		done <- err
	}()
	guestConn.Close()
	select {
	case err := <-done:
		// Seen by the read (end of file) or by the write of the stream's
		// opening, whichever comes first.
		<-l.Done()
		if err == nil || !strings.Contains(err.Error(), "the agent's port") || err.Error() != l.Err().Error() {
			t.Fatalf("err %v (the link: %v)", err, l.Err())
		}
	case <-time.After(time.Second):
		t.Fatal("hello did not return")
	}
}

func TestHostileGuestArchive(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdrs []tar.Header
		want string
	}{
		{"dot-dot", []tar.Header{{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "top/../../evil", Typeflag: tar.TypeReg, Mode: 0o644}}, "components are refused"},
		{"absolute", []tar.Header{{Name: "/tmp/evil", Typeflag: tar.TypeReg, Mode: 0o644}}, "absolute names are refused"},
		{"through a link", []tar.Header{{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "top/l", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, {Name: "top/l/evil", Typeflag: tar.TypeReg, Mode: 0o644}}, "is not a directory (symbolic links are not followed)"},
		{"two tops", []tar.Header{{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, {Name: "b", Typeflag: tar.TypeReg, Mode: 0o644}}, "not under the top-level entry"},
		{"a device", []tar.Header{{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o644}}, "is not supported"},
		{"a hard link", []tar.Header{{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "top/h", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}, "hard links are refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			var archive bytes.Buffer
			tw := tar.NewWriter(&archive)
			for _, h := range tc.hdrs {
				h := h
				tw.WriteHeader(&h)
			}
			tw.Close()
			_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
				w := wire.NewWriter(st)
				b := archive.Bytes()
				for len(b) > 0 {
					n := min(len(b), wire.MaxData)
					w.Write(wire.FrameStdout, b[:n])
					b = b[n:]
				}
				w.Write(wire.FrameReply, []byte("{}"))
				waitClosed(st)
			})
			outer := t.TempDir()
			dst := filepath.Join(outer, "in")
			os.Mkdir(dst, 0o755)
			// Asked for the archive's own top-level name, so that what is
			// refused is the rest of the archive (a renamed top is refused
			// first: copy_hostile_test.go).
			src := "/" + strings.SplitN(strings.TrimPrefix(tc.hdrs[0].Name, "/"), "/", 2)[0]
			err := c.CopyFrom(testContext(t, 10*time.Second), src, dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(outer, "evil")); err == nil {
				t.Fatal("a file was written outside the destination")
			}
		})
	}
}

// TestHostileGuestClaimsSessionEnd: an error frame that says the session
// ended (which only Proxy sends) is taken for what it says, its text made
// safe for a terminal like any guest message.
func TestHostileGuestClaimsSessionEnd(t *testing.T) {
	checkGoroutines(t)
	_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
		raw(st, wire.FrameError, wire.EncodeSessionError(wire.SessionAgentGone, "gone\x1b[2J\r\nfake prompt"))
		waitClosed(st)
	})
	_, err := c.Exec(testContext(t, 10*time.Second), agent.Command{Argv: []string{"x"}}, agent.Stdio{})
	var se *agent.SessionError
	if !errors.As(err, &se) || !errors.Is(err, agent.ErrAgentGone) || strings.ContainsAny(err.Error(), "\x1b\r\n") {
		t.Fatalf("err %q (%T)", err, err)
	}
}
