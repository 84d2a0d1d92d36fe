package copytar

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// futimens sets the access and modification times of the file open at fd,
// to the microsecond (futimes(2); x/sys/unix has no futimens on Darwin).
func futimens(fd int, t time.Time) error {
	tv := unix.Timeval{Sec: t.Unix(), Usec: int32(t.Nanosecond() / 1000)}
	return unix.Futimes(fd, []unix.Timeval{tv, tv})
}

// renameNoReplace renames from to to, failing with EEXIST if to exists.
func renameNoReplace(fromfd int, from string, tofd int, to string) error {
	err := unix.RenameatxNp(fromfd, from, tofd, to, unix.RENAME_EXCL)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
		return renameIfAbsent(fromfd, from, tofd, to)
	}
	return err
}
