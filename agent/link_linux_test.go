//go:build linux

package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
	"github.com/sonix-run/sonix-run/agent/porttest"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// portAgent is the real guest agent code behind an imitation of a virtio
// port, as the agent's service runs it: it opens the port, serves a
// session, and opens the port again when the session ends. The host's
// real Link is on the port's host side (a socket pair, as QEMU's socket).
type portAgent struct {
	port    *porttest.Port
	link    *agent.Link
	client  *agent.Client
	log     *testLog // the guest's
	linkLog *testLog

	// restartDelay is how long the agent's loop waits before opening the
	// port again (systemd's RestartSec).
	restartDelay time.Duration
	// gate, when set, holds the agent's loop after a session has ended
	// until the test sends on it: the agent stays dead.
	gate chan struct{}

	mu  sync.Mutex
	end net.Conn // the agent's open end of the port
}

func newPortAgent(t *testing.T, opts agent.LinkOptions) *portAgent {
	t.Helper()
	hostConn, portConn := socketPair(t)
	a := &portAgent{port: porttest.New(portConn), log: &testLog{}, linkLog: &testLog{}}
	opts.Logf = a.linkLog.logf
	a.link = agent.NewLink(hostConn, opts)
	a.client = agent.NewClient(a.link.Dial)
	t.Cleanup(func() {
		a.link.Close()
		a.port.Close()
		if t.Failed() {
			t.Logf("guest log:\n%s\nlink log:\n%s", a.log, a.linkLog)
		}
	})
	return a
}

// serve runs the agent until the test ends.
func (a *portAgent) serve(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			end, err := a.port.Open()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.end = end
			a.mu.Unlock()
			err = guest.Serve(ctx, end, guest.Options{Logf: a.log.logf})
			a.log.logf("session ended: %v", err)
			if a.gate != nil {
				select {
				case <-a.gate:
				case <-ctx.Done():
					return
				}
			}
			if a.restartDelay > 0 {
				t := time.NewTimer(a.restartDelay) // the restart delay is the point, not a wait for an event
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the agent did not stop")
		}
	})
}

// kill closes the agent's end of the port, as the kernel does when the
// agent dies; the agent's loop opens it again at once, as systemd would
// restart it.
func (a *portAgent) kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.end.Close()
}

// signalWriter counts what is written and closes reached once n bytes
// have been.
type signalWriter struct {
	mu      sync.Mutex
	n, want int
	reached chan struct{}
	sum     []byte // what was written, when keep is set
	keep    bool
}

func newSignalWriter(want int) *signalWriter {
	return &signalWriter{want: want, reached: make(chan struct{})}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n < w.want && w.n+len(p) >= w.want {
		close(w.reached)
	}
	w.n += len(p)
	if w.keep {
		w.sum = append(w.sum, p...)
	}
	return len(p), nil
}

// startExec runs cmd in the background; its result comes on the channel.
func startExec(c *agent.Client, cmd agent.Command, stdio agent.Stdio) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, cmd, stdio)
		done <- err
	}()
	return done
}

func expectErr(t *testing.T, done <-chan error, within time.Duration, target error, msg string) {
	t.Helper()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, target) || !strings.Contains(err.Error(), msg) {
			t.Fatalf("the operation returned %v, want %q", err, msg)
		}
		t.Logf("the operation failed after %v: %v", time.Since(start), err)
	case <-time.After(within):
		t.Fatalf("the operation did not fail within %v", within)
	}
}

func echo(t *testing.T, c *agent.Client, word string) {
	t.Helper()
	var out bytes.Buffer
	st, err := c.Exec(testContext(t, 30*time.Second), agent.Command{Argv: []string{"echo", word}}, agent.Stdio{Stdout: &out})
	if err != nil || st != 0 || out.String() != word+"\n" {
		t.Fatalf("echo %s: status %d, %v, %q", word, st, err, out.String())
	}
}

// TestLinkAgentRestart: the agent dies while a command runs; the next
// agent's preamble fails the command at once with "restarted", and the
// next command runs on the new session. The link itself goes on.
func TestLinkAgentRestart(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{})
	a.serve(t)
	echo(t, a.client, "first")
	started := newSignalWriter(len("started\n"))
	done := startExec(a.client, agent.Command{Shell: "echo started; exec sleep 60"}, agent.Stdio{Stdout: started})
	<-started.reached
	a.kill()
	expectErr(t, done, 5*time.Second, agent.ErrAgentRestarted, "agent: the guest agent restarted")
	echo(t, a.client, "second")
	if err := a.link.Err(); err != nil {
		t.Fatalf("the link ended: %v", err)
	}
	if n := strings.Count(a.linkLog.String(), "agent: session "); n != 2 {
		t.Errorf("%d sessions started, want 2:\n%s", n, a.linkLog)
	}
}

// TestLinkAgentRestartMidStream: the agent dies while data flows both
// ways at full speed. The host's stdin frames that the dead agent never
// read wait in the port (as QEMU keeps them) and reach the next agent
// before the host's answer: it must skip them. Every frame the dead agent
// wrote reached the host whole, so its successor's preamble starts where
// a frame would.
func TestLinkAgentRestartMidStream(t *testing.T) {
	checkGoroutines(t)
	// Pings every 50 ms: the host surely sends something while the port
	// is closed, on top of the stdin its window lets through.
	a := newPortAgent(t, agent.LinkOptions{KeepAliveInterval: 50 * time.Millisecond})
	a.restartDelay = 200 * time.Millisecond
	a.serve(t)
	out := newSignalWriter(4 << 20)
	done := startExec(a.client, agent.Command{Argv: []string{"cat"}}, agent.Stdio{Stdin: zeros{}, Stdout: out})
	<-out.reached
	a.kill()
	expectErr(t, done, 5*time.Second, agent.ErrAgentRestarted, "agent: the guest agent restarted")
	t.Logf("%d bytes the host sent to the dead agent went to the next one", a.port.Carried())
	if a.port.Carried() == 0 {
		t.Error("nothing was left in the port for the next agent to skip")
	}

	// The new session carries bytes exactly.
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	got := newSignalWriter(len(data))
	got.keep = true
	st, err := a.client.Exec(testContext(t, 60*time.Second), agent.Command{Argv: []string{"cat"}}, agent.Stdio{Stdin: bytes.NewReader(data), Stdout: got})
	if err != nil || st != 0 || sha256.Sum256(got.sum) != sha256.Sum256(data) {
		t.Fatalf("cat after the restart: status %d, %v, %d bytes", st, err, len(got.sum))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestLinkSkipsGarbageBeforePreamble: what an earlier agent left in the
// port (half a frame, random bytes, lines that look like a preamble) is
// skipped; the real agent that comes next is served.
func TestLinkSkipsGarbageBeforePreamble(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{})
	end, err := a.port.Open()
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 12)
	hdr[1] = 0 // data
	binary.BigEndian.PutUint32(hdr[4:], 3)
	binary.BigEndian.PutUint32(hdr[8:], 70000)
	for _, g := range [][]byte{
		hdr, bytes.Repeat([]byte{0xa5}, 1000),
		[]byte("SONIX-RUN-AGENT 2 ab"),
		[]byte("SONIX-RUN-AGENT 2 " + strings.Repeat("z", 32) + "\n"),
		[]byte("\x00SONIX-RUN-AGENT"),
	} {
		end.Write(g)
	}
	end.Close()
	a.serve(t)
	h, err := a.client.Hello(testContext(t, 30*time.Second))
	if err != nil || h.ProtocolVersion != wire.Version {
		t.Fatalf("hello: %+v %v", h, err)
	}
	echo(t, a.client, "served")
}

// TestLinkSilentGuestKeepsSession: a guest that says nothing for 10 s
// (a TCG guest under load, stalled) while the host pings it every 100 ms
// keeps its session when the timeout is longer: the command started
// before goes on, and nothing restarts.
func TestLinkSilentGuestKeepsSession(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: 20 * time.Second})
	a.serve(t)
	echo(t, a.client, "before")
	out := newSignalWriter(len("started\n"))
	out.keep = true
	done := make(chan error, 1)
	go func() {
		st, err := a.client.Exec(testContext(t, 60*time.Second), agent.Command{Shell: "echo started; sleep 11; echo done"}, agent.Stdio{Stdout: out})
		if err == nil && st != 0 {
			err = fmt.Errorf("status %d", st)
		}
		done <- err
	}()
	<-out.reached
	a.port.Freeze()
	time.Sleep(10 * time.Second) // the silence is what is tested
	a.port.Thaw()
	if err := <-done; err != nil {
		t.Fatalf("the command across the silence: %v", err)
	}
	if string(out.sum) != "started\ndone\n" {
		t.Fatalf("output %q", out.sum)
	}
	echo(t, a.client, "after")
	if n := strings.Count(a.log.String(), "the host answered"); n != 1 {
		t.Fatalf("%d sessions, want 1:\n%s", n, a.log)
	}
}

// TestLinkGivesUpSilentGuest: a guest silent for longer than the
// keepalive timeout has its session given up: its pending operation fails
// with "stopped answering", and the host's resync line makes the agent,
// when it wakes, start a new session, which serves the next command.
func TestLinkGivesUpSilentGuest(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: time.Second})
	a.serve(t)
	echo(t, a.client, "before")
	started := newSignalWriter(len("started\n"))
	done := startExec(a.client, agent.Command{Shell: "echo started; exec sleep 60"}, agent.Stdio{Stdout: started})
	<-started.reached
	a.port.Freeze()
	expectErr(t, done, 10*time.Second, agent.ErrAgentSilent, "agent: the guest agent stopped answering")
	a.port.Thaw()
	echo(t, a.client, "after")
	if !strings.Contains(a.log.String(), "session ended: "+guest.ErrHostResync.Error()) {
		t.Errorf("the agent did not see the resync line:\n%s", a.log)
	}
}

// TestLinkTornFrame: an agent (not this one: it writes whole frames) dies
// in the middle of a frame, and the next agent's preamble is taken for the
// rest of that frame. The session stalls, the keepalive gives it up, and
// the preamble is found in what the stalled frame had taken.
func TestLinkTornFrame(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: time.Second})
	end, err := a.port.Open()
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, end)
	hdr := make([]byte, 12)
	binary.BigEndian.PutUint32(hdr[4:], 2)
	binary.BigEndian.PutUint32(hdr[8:], 1000) // a data frame whose body is cut
	end.Write(append(hdr, make([]byte, 10)...))
	end.Close()
	a.serve(t)
	// A hello opened on the stalled session fails with it.
	h, err := a.client.Hello(testContext(t, 30*time.Second))
	if err != nil {
		if !errors.Is(err, agent.ErrAgentSilent) {
			t.Fatalf("hello on the stalled session: %v", err)
		}
		h, err = a.client.Hello(testContext(t, 30*time.Second))
	}
	if err != nil || h.ProtocolVersion != wire.Version {
		t.Fatalf("hello: %+v %v", h, err)
	}
	echo(t, a.client, "recovered")
	if !strings.Contains(a.linkLog.String(), "stopped answering") {
		t.Errorf("link log:\n%s", a.linkLog)
	}
}

var _ io.Reader = zeros{}

// expectGone checks that every verb fails within 2 s, saying that the
// agent's port closed, while the agent stays dead.
func expectGone(t *testing.T, c *agent.Client) {
	t.Helper()
	src := t.TempDir()
	for name, op := range map[string]func(ctx context.Context) error{
		"hello": func(ctx context.Context) error { _, err := c.Hello(ctx); return err },
		"exec": func(ctx context.Context) error {
			_, err := c.Exec(ctx, agent.Command{Argv: []string{"true"}}, agent.Stdio{})
			return err
		},
		"exec with stdin": func(ctx context.Context) error {
			_, err := c.Exec(ctx, agent.Command{Argv: []string{"cat"}}, agent.Stdio{Stdin: strings.NewReader("x")})
			return err
		},
		"cp to":    func(ctx context.Context) error { return c.CopyTo(ctx, src, "/tmp") },
		"cp from":  func(ctx context.Context) error { return c.CopyFrom(ctx, "/etc/hostname", t.TempDir()) },
		"poweroff": func(ctx context.Context) error { return c.PowerOff(ctx) },
	} {
		start := time.Now()
		err := op(testContext(t, 30*time.Second))
		d := time.Since(start)
		if !errors.Is(err, agent.ErrAgentGone) || !strings.Contains(err.Error(), "agent: the guest agent's port closed") {
			t.Errorf("%s: %v, want ErrAgentGone", name, err)
		}
		if d > 2*time.Second {
			t.Errorf("%s answered after %v, want within 2 s", name, d)
		}
	}
}

// TestLinkAgentGone: with the port's events (as QEMU gives them), an
// agent that dies, with a command running or none, fails that command at
// once and every verb within 2 s while no agent runs; the next agent is
// used as soon as it announces itself.
func TestLinkAgentGone(t *testing.T) {
	for _, running := range []bool{true, false} {
		t.Run(fmt.Sprintf("running=%v", running), func(t *testing.T) {
			checkGoroutines(t)
			a := newPortAgent(t, agent.LinkOptions{})
			opened := make(chan struct{}, 4)
			a.port.Notify(func(open bool) {
				a.link.PortOpen(open)
				if open {
					opened <- struct{}{}
				}
			})
			a.gate = make(chan struct{})
			a.serve(t)
			echo(t, a.client, "first")
			var done <-chan error
			if running {
				started := newSignalWriter(len("started\n"))
				done = startExec(a.client, agent.Command{Shell: "echo started; exec sleep 60"}, agent.Stdio{Stdout: started})
				<-started.reached
			}
			a.kill()
			if running {
				expectErr(t, done, 2*time.Second, agent.ErrAgentGone, "agent: the guest agent's port closed")
			}
			expectGone(t, a.client)
			<-opened // the first agent's
			a.gate <- struct{}{}
			<-opened // the next agent opens the port
			start := time.Now()
			echo(t, a.client, "second")
			t.Logf("the next agent answered after %v", time.Since(start))
			if err := a.link.Err(); err != nil {
				t.Fatalf("the link ended: %v", err)
			}
		})
	}
}

// TestLinkLateCloseEvent: a close event that reaches the link after the
// next agent's preamble (the events and the port's bytes come by
// different ways) does not end the next agent's session; one that is
// newer than the session does.
func TestLinkLateCloseEvent(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{})
	a.serve(t)
	before := time.Now()
	echo(t, a.client, "first")
	a.link.PortOpenAt(false, before)
	echo(t, a.client, "still")
	if n := strings.Count(a.linkLog.String(), "agent: session "); n != 1 {
		t.Errorf("%d sessions, want 1:\n%s", n, a.linkLog)
	}
	a.link.PortOpen(false)
	started := time.Now()
	_, err := a.client.Hello(testContext(t, 30*time.Second))
	if err == nil {
		// The agent, still there, took the resync line and came back.
		t.Logf("hello after a close event for a live agent: a new session after %v", time.Since(started))
	} else if !errors.Is(err, agent.ErrAgentGone) {
		t.Fatalf("hello after the close event: %v", err)
	}
	echo(t, a.client, "again")
	if strings.Count(a.linkLog.String(), "agent: session ") != 2 || !strings.Contains(a.log.String(), "session ended: "+guest.ErrHostResync.Error()) {
		t.Errorf("want a second session after the resync line; link log:\n%s\nguest log:\n%s", a.linkLog, a.log)
	}
}

// TestLinkVMEnds: the port's connection ending in the middle of a command
// (QEMU exited: the VM ended) fails it at once with an error that says so
// (ErrVMEnded), which launchers tell apart from the agent's failures.
func TestLinkVMEnds(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{})
	a.serve(t)
	started := newSignalWriter(len("started\n"))
	done := startExec(a.client, agent.Command{Shell: "echo started; exec sleep 60"}, agent.Stdio{Stdout: started})
	<-started.reached
	a.port.Close()
	expectErr(t, done, 2*time.Second, agent.ErrVMEnded, "agent: the agent's port closed (the VM ended)")
	if _, err := a.client.Hello(testContext(t, 10*time.Second)); !errors.Is(err, agent.ErrVMEnded) {
		t.Fatalf("hello after the end: %v", err)
	}
}

// proxied is a Client whose streams go through Proxy, as sonix-run's
// control socket passes them.
func proxied(t *testing.T, l *agent.Link) *agent.Client {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		stream, err := l.Dial(ctx)
		if err != nil {
			return nil, err
		}
		client, end := socketPair(t) // a half-close, as the control socket's (net.Pipe has none)
		wg.Add(1)
		go func() {
			defer wg.Done()
			agent.Proxy(end, stream)
		}()
		return client, nil
	})
}

// TestProxyAgentGone: through Proxy (sonix-run's control socket), an
// operation whose agent dies fails within 2 s with the same error as on
// the link itself; and everything else works as directly.
func TestProxyAgentGone(t *testing.T) {
	checkGoroutines(t)
	a := newPortAgent(t, agent.LinkOptions{})
	a.port.Notify(a.link.PortOpen)
	a.gate = make(chan struct{})
	a.serve(t)
	c := proxied(t, a.link)
	echo(t, c, "through the proxy")
	data := randomBytes(3<<20, 5)
	got := newSignalWriter(len(data))
	got.keep = true
	st, err := c.Exec(testContext(t, time.Minute), agent.Command{Argv: []string{"cat"}}, agent.Stdio{Stdin: bytes.NewReader(data), Stdout: got})
	if err != nil || st != 0 || !bytes.Equal(got.sum, data) {
		t.Fatalf("cat through the proxy: status %d, %v, %d bytes", st, err, len(got.sum))
	}
	started := newSignalWriter(len("started\n"))
	done := startExec(c, agent.Command{Shell: "echo started; exec sleep 60"}, agent.Stdio{Stdout: started})
	<-started.reached
	a.kill()
	expectErr(t, done, 2*time.Second, agent.ErrAgentGone, "agent: the guest agent's port closed")
	close(a.gate)
}
