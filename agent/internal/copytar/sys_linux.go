package copytar

import (
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futimens sets the access and modification times of the file open at fd
// (utimensat with a NULL path, as glibc's futimens does).
func futimens(fd int, t time.Time) error {
	ts, err := unix.TimeToTimespec(t)
	if err != nil {
		return err
	}
	times := [2]unix.Timespec{ts, ts}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// renameNoReplace renames from to to, failing with EEXIST if to exists.
func renameNoReplace(fromfd int, from string, tofd int, to string) error {
	err := unix.Renameat2(fromfd, from, tofd, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return renameIfAbsent(fromfd, from, tofd, to)
	}
	return err
}
