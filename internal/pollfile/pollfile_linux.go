// Package pollfile reopens a pipe or terminal so that its reads and writes
// can be interrupted.
package pollfile

import (
	"os"
	"strconv"
	"syscall"
)

// Reopen reopens a pipe or terminal as a new, non-blocking open file
// description of the same object, so that its reads and writes can be
// interrupted (deadlines, Close) when the run ends: a blocking read of the
// user's stdin, or a write to a stdout pipe nobody reads, must not hold
// sonix-run past --timeout. The user's own descriptor keeps its blocking
// mode. ok is false where this cannot be done (regular files never block
// anyway).
func Reopen(f *os.File, flag int) (*os.File, bool) {
	if f == nil {
		return nil, false
	}
	st, err := f.Stat()
	if err != nil {
		return nil, false
	}
	m := st.Mode()
	if m&os.ModeNamedPipe == 0 && m&os.ModeCharDevice == 0 {
		return nil, false
	}
	r, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	return r, true
}
