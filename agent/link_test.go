package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/transport"
)

// expectSilence checks that nothing arrives on conn for d.
func expectSilence(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	defer conn.SetReadDeadline(time.Time{})
	b := make([]byte, 64)
	n, err := conn.Read(b)
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the host sent %q (%v) where it should have sent nothing", b[:n], err)
	}
}

// readExactly reads len(want) bytes and checks them.
func readExactly(t *testing.T, conn net.Conn, want []byte) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the host sent %q (%v), want %q", got, err, want)
	}
}

// TestLinkWaitsForPreamble: the host sends nothing before the agent's
// preamble, even with operations waiting and garbage arriving; it answers
// a preamble behind garbage with exactly its acknowledgement, and only
// then speaks yamux.
func TestLinkWaitsForPreamble(t *testing.T) {
	checkGoroutines(t)
	hostConn, guestConn := net.Pipe()
	defer guestConn.Close()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	defer l.Close()
	c := agent.NewClient(l.Dial)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := c.Hello(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hello without an agent: %v", err)
	}
	expectSilence(t, guestConn, 200*time.Millisecond)

	// What an earlier session may leave, and lines that only look like a
	// preamble.
	garbage := [][]byte{
		{0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0x10, 0},                                // a data frame's header, its body never comes
		[]byte("SONIX-RUN-AGENT 2 ab"),                                         // cut short, no newline
		[]byte("\x00\xffSONIX-RUN-AGENT 2 0123456789abcdef0123456789ABCDEF\n"), // upper case id
		[]byte("SONIX-RUN-AGENT 01 " + transport.NewSessionID() + "\n"),        // a leading zero
		[]byte("SONIX-RUN-AGENT 2 " + transport.NewSessionID() + " extra\n"),
		[]byte("SONIX-RUN-AGEN"), // a magic cut short
		bytes.Repeat([]byte{'S'}, 5000),
	}
	for _, g := range garbage {
		if _, err := guestConn.Write(g); err != nil {
			t.Fatal(err)
		}
	}
	expectSilence(t, guestConn, 100*time.Millisecond)
	helloDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Hello(ctx)
		helloDone <- err
	}()
	id := transport.NewSessionID()
	// The preamble split across writes.
	pre := transport.AgentPreamble(id)
	guestConn.Write(pre[:7])
	guestConn.Write(pre[7:])
	readExactly(t, guestConn, transport.HostAck(id))
	// Then yamux: the waiting hello's stream opens (a window update with
	// SYN, version 0).
	readExactly(t, guestConn, []byte{0, 1, 0, 1})
	guestConn.Close() // the port's connection ends, seen by a read or a write
	err = <-helloDone
	if err == nil || !strings.Contains(err.Error(), "the agent's port") || err.Error() != l.Err().Error() {
		t.Fatalf("hello: %v (the link: %v)", err, l.Err())
	}
}

// TestLinkVersionMismatch: an agent of another protocol version gets no
// answer and operations fail at once, naming both versions; an agent of
// this version that comes next is served.
func TestLinkVersionMismatch(t *testing.T) {
	checkGoroutines(t)
	hostConn, guestConn := net.Pipe()
	defer guestConn.Close()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	defer l.Close()
	c := agent.NewClient(l.Dial)
	if _, err := guestConn.Write([]byte("SONIX-RUN-AGENT 3 whatever a later version says\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := c.Hello(ctx)
		cancel()
		if errors.Is(err, agent.ErrVersion) {
			if want := "agent: the guest agent speaks protocol version 3; this host speaks 2"; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %q, want it to start %q", err, want)
			}
			break
		}
		if !errors.Is(err, context.DeadlineExceeded) || time.Now().After(deadline) {
			t.Fatalf("hello: %v", err)
		}
		// Until the link has read the preamble, hello waits.
	}
	expectSilence(t, guestConn, 100*time.Millisecond)
	if l.Err() != nil {
		t.Fatalf("the link ended: %v", l.Err())
	}
	id := transport.NewSessionID()
	guestConn.Write(transport.AgentPreamble(id))
	readExactly(t, guestConn, transport.HostAck(id))
	helloDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Hello(ctx)
		helloDone <- err
	}()
	readExactly(t, guestConn, []byte{0, 1, 0, 1}) // its stream opens
	l.Close()
	if err := <-helloDone; !errors.Is(err, agent.ErrLinkClosed) {
		t.Fatalf("hello after Close: %v", err)
	}
}
