//go:build linux

package agent_test

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
)

// socketPair is a connected pair of Unix stream sockets, as a virtio
// port's socket is on the host.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// testLog collects the guest's log lines for failure messages.
type testLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *testLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSpace(sprintf(format, args...)))
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// pair runs the real guest agent code on one end of a socket pair and the
// real host link on the other; cleanup ends both and checks that Serve
// returned.
type pair struct {
	link   *agent.Link
	client *agent.Client
	log    *testLog
}

func newPair(t testing.TB, opts guest.Options) *pair {
	t.Helper()
	hostConn, guestConn := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	p := &pair{log: &testLog{}}
	if opts.Logf == nil {
		opts.Logf = p.log.logf
	}
	served := make(chan error, 1)
	go func() { served <- guest.Serve(ctx, guestConn, opts) }()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	p.link, p.client = l, agent.NewClient(l.Dial)
	t.Cleanup(func() {
		l.Close()
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("guest.Serve did not return within 30 s of the link's end")
		}
		if t.Failed() {
			t.Logf("guest log:\n%s", p.log)
		}
	})
	return p
}
