//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package kernelimage

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// tryLock takes an exclusive advisory lock on the file at path (made if
// missing; a link there is replaced, never followed) without waiting.
// It returns unlock and true when this process holds the lock now; false
// when another holds it. The kernel drops the lock when the holder dies, so
// a killed run never leaves the kernel locked.
func tryLock(path string) (unlock func(), ok bool, err error) {
	f, err := owndir.OpenLock(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return func() { f.Close() }, true, nil
}
