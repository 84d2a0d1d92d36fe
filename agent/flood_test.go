package agent_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// yamuxFrame is a yamux header (version 0) with no body.
func yamuxFrame(typ byte, flags uint16, stream, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], stream)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// A guest that floods the host with what yamux answers in a goroutine
// each (pings), or opens streams, while never reading: the link ends at
// the first such frame with a clear error, and the host's goroutines stay
// bounded.
func TestHostileGuestFloods(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"pings", yamuxFrame(2, 1, 0, 7), "the guest sent a ping"},
		{"stream opens", yamuxFrame(1, 1, 2, 0), "the guest opened a stream"},
		{"unknown frames", yamuxFrame(9, 0, 0, 0), "unknown type 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			hostConn, guestConn := net.Pipe()
			l := agent.NewLink(hostConn, agent.LinkOptions{})
			defer l.Close()
			handshake(t, guestConn)
			// 100,000 frames (1.2 MB); the guest never reads.
			flood := make([]byte, 0, 12*1000)
			for range 1000 {
				flood = append(flood, tc.frame...)
			}
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				for range 100 {
					if _, err := guestConn.Write(flood); err != nil {
						return
					}
				}
			}()
			select {
			case <-l.Done():
			case <-time.After(30 * time.Second):
				t.Fatalf("the link still runs after the flood (%d goroutines)", runtime.NumGoroutine())
			}
			err := l.Err()
			if !errors.Is(err, agent.ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("link error = %v, want ErrProtocol saying %q", err, tc.want)
			}
			if n := runtime.NumGoroutine(); n > before+20 {
				t.Errorf("%d goroutines after the flood (%d before)", n, before)
			}
			guestConn.Close()
			<-wrote
		})
	}
}

// A guest whose multiplexer answers but whose agent never replies cannot
// hold an operation: each one that waits on the guest has a bound.
func TestSilentAgentIsBounded(t *testing.T) {
	old := agent.AnswerTimeout
	agent.AnswerTimeout = 300 * time.Millisecond
	defer func() { agent.AnswerTimeout = old }()
	_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
		waitClosed(st) // reads the request, then says nothing
	})
	ctx := context.Background()
	for name, op := range map[string]func() error{
		"hello":    func() error { _, err := c.Hello(ctx); return err },
		"poweroff": func() error { return c.PowerOff(ctx) },
		"exec": func() error {
			_, err := c.Exec(ctx, agent.Command{Argv: []string{"true"}}, agent.Stdio{})
			return err
		},
	} {
		start := time.Now()
		err := op()
		if err == nil || !strings.Contains(err.Error(), "did not answer within 300ms") {
			t.Errorf("%s: error = %v, want the answer bound's", name, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %v", name, d)
		}
	}
}
