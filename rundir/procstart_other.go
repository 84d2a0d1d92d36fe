//go:build !linux

package rundir

import (
	"os"
	"syscall"
)

// procStart reports whether pid runs; where /proc is missing the start
// time is unknown (0), so PID reuse cannot be told apart.
func procStart(pid int) (uint64, error) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return 0, err
	}
	return 0, p.Signal(syscall.Signal(0))
}
