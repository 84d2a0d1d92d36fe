//go:build unix

package vz

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dupOf plays the framework's VM service, which may hold its own copy of
// the guest's end after the VM has stopped.
func dupOf(t *testing.T, f *os.File) *os.File {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	var dupErr error
	rc.Control(func(s uintptr) { fd, dupErr = syscall.Dup(int(s)) })
	if dupErr != nil {
		t.Fatal(dupErr)
	}
	d := os.NewFile(uintptr(fd), "framework-copy")
	t.Cleanup(func() { d.Close() })
	return d
}

// The port carries bytes both ways, exactly; after the VM's end the host
// reads the guest's last bytes and then end-of-file, even though the
// "framework" still holds a copy of the guest's end.
func TestAgentPortStreamAndEnd(t *testing.T) {
	a, err := newAgentPort()
	if err != nil {
		t.Fatal(err)
	}
	framework := dupOf(t, a.guest)
	host, err := a.take()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()

	// Host to guest and back, every byte value, more than the buffers hold,
	// each direction copied concurrently so neither side blocks the other.
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	echoDone := make(chan error, 1)
	go func() {
		buf := make([]byte, len(payload))
		if _, err := io.ReadFull(framework, buf); err != nil {
			echoDone <- err
			return
		}
		_, err := framework.Write(append(buf, "last words"...))
		echoDone <- err
	}()
	writeDone := make(chan error, 1)
	go func() {
		_, err := host.Write(payload)
		writeDone <- err
	}()
	got := make([]byte, len(payload)+len("last words"))
	if _, err := io.ReadFull(host, got); err != nil {
		t.Fatal(err)
	}
	if err := <-writeDone; err != nil {
		t.Fatal(err)
	}
	if err := <-echoDone; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(payload)], payload) || string(got[len(payload):]) != "last words" {
		t.Fatal("the stream changed the bytes")
	}

	framework.Write([]byte("after the stop"))
	a.end()
	a.end() // idempotent
	rest := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(host)
		rest <- b
	}()
	select {
	case b := <-rest:
		if string(b) != "after the stop" {
			t.Errorf("host read %q after the end, want the guest's last bytes", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the host's read did not end after the port's end")
	}
	if _, err := a.take(); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("take after the end: %v", err)
	}
}

func TestAgentPortTakenOnce(t *testing.T) {
	a, err := newAgentPort()
	if err != nil {
		t.Fatal(err)
	}
	defer a.end()
	c, err := a.take()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := a.take(); err == nil || !strings.Contains(err.Error(), "already connected") {
		t.Errorf("second take: %v", err)
	}
}

// A connection nobody took is closed at the end; one that was taken is left
// to its taker.
func TestAgentPortEndClosesUntaken(t *testing.T) {
	a, err := newAgentPort()
	if err != nil {
		t.Fatal(err)
	}
	host := a.host
	a.end()
	if _, err := host.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on the untaken connection after the end: %v", err)
	}
}

// The machine hands out the port through AgentConn and ends it with the VM.
func TestMachineAgentConn(t *testing.T) {
	a, err := newAgentPort()
	if err != nil {
		t.Fatal(err)
	}
	framework := dupOf(t, a.guest)
	f := newFakeVM()
	r := startFake(t, f, false)
	r.m.agent = a

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.m.AgentConn(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("AgentConn with a cancelled context: %v", err)
	}
	conn, err := r.m.AgentConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := r.m.AgentConn(context.Background()); err == nil {
		t.Error("a second AgentConn succeeded")
	}
	framework.Write([]byte("exit 0\n"))
	f.states <- fakeStopped
	waitDone(t, r.m)
	b, err := io.ReadAll(conn)
	if string(b) != "exit 0\n" || err != nil {
		t.Errorf("after the end the host read %q, %v", b, err)
	}
}
