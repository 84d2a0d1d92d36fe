package sockwait

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestListeningSeesALaterListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "late.sock")
	done := make(chan error, 1)
	go func() { done <- Listening(context.Background(), path, nil) }()
	time.Sleep(20 * time.Millisecond) // let the waiter start before the socket exists
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Listening did not notice the socket")
	}
}

func TestListeningSeesAnExistingListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "early.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := Listening(context.Background(), path, nil); err != nil {
		t.Fatal(err)
	}
}

func TestListeningStopsWhenTheProcessExits(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	err := Listening(context.Background(), filepath.Join(t.TempDir(), "never.sock"), exited)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("got %v, want ErrExited", err)
	}
}

func TestListeningHonoursTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Listening(ctx, filepath.Join(t.TempDir(), "never.sock"), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
}
