// Package diskimage creates the raw disk images sonix-run makes on first
// use (--state): sparse, complete before they appear under their name.
package diskimage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// CreateRaw creates path as a sparse raw image of size bytes unless it
// exists (a link there counts: it is not followed). It is made under a
// temporary name in the same directory (O_EXCL) and renamed into place
// once complete, so that a run killed half-way leaves no image that looks
// ready. created says whether it made one.
func CreateRaw(path string, size int64) (created bool, err error) {
	if _, err := os.Lstat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".creating-*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}
