//go:build linux || darwin

package copytar

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// openDirAt opens the directory name in dirfd, never through a link: a
// link there (or anything but a directory) is ELOOP or ENOTDIR.
func openDirAt(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// openDir opens the directory at path, following links: the path that the
// user named.
func openDir(path string) (int, error) {
	return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

func fileType(st *unix.Stat_t) uint32 { return uint32(st.Mode) & unix.S_IFMT }

func isDir(st *unix.Stat_t) bool { return fileType(st) == unix.S_IFDIR }

func mtime(st *unix.Stat_t) time.Time { return time.Unix(st.Mtim.Unix()) }

// kind names a file type for messages.
func kind(st *unix.Stat_t) string {
	switch fileType(st) {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "named pipe"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return "special file"
}

// notDir says an error of openDirAt means that what is there is not a
// directory (a link, or a file).
func notDir(err error) bool {
	return errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EMLINK)
}

// readlinkat reads the target of the link name in dirfd.
func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 64<<10 {
			return "", unix.ENAMETOOLONG
		}
	}
}

// readDirNames lists the directory fd (without "." and "..").
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(dup)
	f := os.NewFile(uintptr(dup), "directory")
	defer f.Close()
	// A dup shares the offset of fd: start from the beginning.
	if _, err := f.Seek(0, 0); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}

// renameIfAbsent renames from to to unless to exists; the fallback where
// the kernel or file system has no no-replace rename. Between the check
// and the rename another process could create to: a directory renamed
// over an empty directory replaces it, over anything else fails.
func renameIfAbsent(fromfd int, from string, tofd int, to string) error {
	var st unix.Stat_t
	switch err := unix.Fstatat(tofd, to, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		return unix.EEXIST
	case !errors.Is(err, unix.ENOENT):
		return err
	}
	return unix.Renameat(fromfd, from, tofd, to)
}

// removeTree removes name in pfd and, when it is a directory, everything
// in it, never through a link; best effort (after a failed copy, it
// removes what the copy created under a temporary name).
func removeTree(pfd int, name string) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return
	}
	if !isDir(&st) {
		unix.Unlinkat(pfd, name, 0)
		return
	}
	fd, err := openDirAt(pfd, name)
	if err != nil {
		return
	}
	if unix.Fstat(fd, &st) == nil && int(st.Uid) == os.Geteuid() {
		unix.Fchmod(fd, 0o700) // its entries can go
	}
	names, _ := readDirNames(fd)
	for _, n := range names {
		removeTree(fd, n)
	}
	unix.Close(fd)
	unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
}

// pathError is an error of a system call on a path, as os reports them.
func pathError(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}
