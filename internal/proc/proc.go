// Package proc starts the helper processes of a run (QEMU, virtiofsd) so that
// none of them can outlive sonix-run, whatever ends it.
package proc

import (
	"os/exec"
	"sync"
)

// Start starts cmd in its own process group, so that a Ctrl-C typed at the
// terminal reaches only sonix-run, which then stops its children in order.
// On Linux the child is also killed by the kernel if sonix-run dies, even by
// SIGKILL (see start_linux.go).
func Start(cmd *exec.Cmd) error {
	setSysProcAttr(cmd)
	return start(cmd)
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
