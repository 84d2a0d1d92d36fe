package launcher

import (
	"os"
	"syscall"
)

// pollable reopens a pipe or terminal as a new, non-blocking open file
// description of the same object, so that its reads and writes can be
// interrupted (deadlines, Close) when the run ends: a blocking read of the
// user's stdin, or a write to a stdout pipe nobody reads, must not hold the
// run past --timeout. The user's own descriptor keeps its blocking mode. ok
// is false where this cannot be done (regular files never block anyway).
func pollable(f *os.File, flag int) (*os.File, bool) {
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
	r, err := os.OpenFile("/proc/self/fd/"+itoa(int(f.Fd())), flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	return r, true
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}
