// Package proc starts the helper processes of a run (QEMU, virtiofsd) so that
// none of them can outlive sonix-run, whatever ends it.
package proc

import (
	"context"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Start starts cmd in its own process group, so that a Ctrl-C typed at the
// terminal reaches only sonix-run, which then stops its children in order.
// On Linux the child is also killed by the kernel if sonix-run dies, even by
// SIGKILL (see start_linux.go).
func Start(cmd *exec.Cmd) error { return start(cmd) }

// Run runs cmd like Start and waits for it. When ctx ends first, the
// child's process group gets SIGINT (what Ctrl-C gives a tool such as nix,
// which then stops its builders cleanly), and SIGKILL after grace; Run
// returns once it has exited. For short helpers sonix-run waits on (nix
// build, nix-store, qemu-img).
func Run(ctx context.Context, cmd *exec.Cmd, grace time.Duration) error {
	if cmd.WaitDelay == 0 {
		// A grandchild that keeps an output pipe open cannot hold Wait.
		cmd.WaitDelay = grace
	}
	if err := Start(cmd); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-exited:
		return err
	case <-t.C:
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return <-exited
}

// Tail keeps the last bytes written to it: the end of a helper's stderr, to
// quote when it fails.
type Tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// NewTail returns a Tail that keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns what was kept.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
