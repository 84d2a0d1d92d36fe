// Package owndir finds and checks the directories sonix-run keeps its own
// files in (run directories, sockets, caches), and creates files in them
// without following links: another local user must not be able to make such
// a directory first, plant a file or link in it, or swap one.
//
// A directory is "own" when Lstat shows a real directory (not a link)
// owned by the effective user; Private directories (sockets, owner files)
// also give no access to group or others, Cache directories let no one
// else write. Its parents are not checked: they are the user's choice
// ($XDG_RUNTIME_DIR, the home directory) or the sticky temporary directory.
package owndir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Kind is what a directory is checked for.
type Kind int

const (
	// Private: no access at all for group and others (sockets, owner files).
	Private Kind = iota
	// Cache: no writing for group and others (kernels, verdicts).
	Cache
)

// UnsafeError says why a directory cannot be trusted, and what to do.
type UnsafeError struct {
	Dir    string
	Reason string // "belongs to uid 1001", "has mode 0777", ...
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("%s %s, so another user could reach or replace what sonix-run keeps there; remove it (or point $XDG_RUNTIME_DIR, $TMPDIR or $XDG_CACHE_HOME elsewhere)", e.Dir, e.Reason)
}

// Check checks that dir is an own directory of kind k.
func Check(dir string, k Kind) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	return checkInfo(dir, fi, k)
}

func checkInfo(dir string, fi fs.FileInfo, k Kind) error {
	if !fi.IsDir() {
		what := "is not a directory"
		if fi.Mode()&fs.ModeSymlink != 0 {
			what = "is a symbolic link, not a directory"
		}
		return &UnsafeError{Dir: dir, Reason: what}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &UnsafeError{Dir: dir, Reason: "has an owner that cannot be read"}
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return &UnsafeError{Dir: dir, Reason: fmt.Sprintf("belongs to uid %d, not to you (uid %d)", st.Uid, uid)}
	}
	bad := fs.FileMode(0o077)
	if k == Cache {
		bad = 0o022
	}
	if fi.Mode().Perm()&bad != 0 {
		return &UnsafeError{Dir: dir, Reason: fmt.Sprintf("has mode %04o (others may enter or write it)", fi.Mode().Perm())}
	}
	return nil
}

// Ensure makes dir if it is missing (mode 0700, whatever the umask; its
// parent must exist) and checks it. A directory made by someone else, or a
// link, is refused, never repaired.
func Ensure(dir string, k Kind) error {
	if err := os.Mkdir(dir, 0o700); err == nil {
		// Made by us just now: the umask may have taken bits we want
		// (never added any). Chmod through a handle on what we made.
		if err := chmodDir(dir, 0o700); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return err
	}
	return Check(dir, k)
}

// EnsureIn is Ensure for dir, making its parent first when only that is
// missing (~/.cache on a new account); a missing home is not made.
func EnsureIn(dir string, k Kind) error {
	if err := os.Mkdir(filepath.Dir(dir), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return Ensure(dir, k)
}

func chmodDir(dir string, mode fs.FileMode) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer syscall.Close(fd)
	if err := syscall.Fchmod(fd, uint32(mode)); err != nil {
		return &os.PathError{Op: "chmod", Path: dir, Err: err}
	}
	return nil
}

// Create creates the new file name in dir, which must not exist (not even
// as a link), for writing and reading back, with mode perm (less the
// umask).
func Create(dir, name string, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
}

// WriteFile replaces dir/name with data, atomically: written to a new
// file and renamed over name (a link at name is replaced, never followed).
// dir should be an own directory, so that no one else can rename or plant
// in it.
func WriteFile(dir, name string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*") // O_EXCL
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// ReadFile reads dir/name, at most limit bytes, without following a link
// at name (an error, ELOOP, then): dir should be an own directory.
func ReadFile(dir, name string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, &os.PathError{Op: "read", Path: f.Name(), Err: errors.New("not a regular file")}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &os.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("larger than %d bytes", limit)}
	}
	return data, nil
}

// OpenLock opens the lock file dir/name for writing, creating it (mode
// 0600) when missing, without following a link at name: a link found
// there is removed and a file made in its place, its target untouched.
// Anything else that is not a regular file is an error. dir should be an
// own directory.
func OpenLock(dir, name string) (*os.File, error) {
	path := filepath.Join(dir, name)
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
		if err == nil {
			fi, err := f.Stat()
			if err == nil && !fi.Mode().IsRegular() {
				err = &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("not a regular file (%v)", fi.Mode().Type())}
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		if attempt > 0 || !errors.Is(err, syscall.ELOOP) {
			return nil, err
		}
		if fi, lerr := os.Lstat(path); lerr != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return nil, err
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return nil, rerr
		}
	}
}

// TempBase is the private per-user directory in the temporary directory:
// $TMPDIR/sonix-run-UID (not made here).
func TempBase() string {
	return filepath.Join(os.TempDir(), "sonix-run-"+strconv.Itoa(os.Geteuid()))
}

// RuntimeDir is $XDG_RUNTIME_DIR when it is set (absolute) and an own
// private directory, as systemd makes it; "" and a nil error when it is
// not set; "" and why when it is set but cannot be used (missing, another
// user's, open to others, a link): then sonix-run keeps its sockets in
// TempBase instead.
func RuntimeDir() (string, error) {
	d := os.Getenv("XDG_RUNTIME_DIR")
	if d == "" {
		return "", nil
	}
	if !filepath.IsAbs(d) {
		return "", fmt.Errorf("$XDG_RUNTIME_DIR %q is not an absolute path", d)
	}
	d = filepath.Clean(d)
	if err := Check(d, Private); err != nil {
		return "", err
	}
	return d, nil
}

// RuntimeBases lists the places sonix-run may keep sockets in, in order:
// RuntimeDir when it is usable, then TempBase (always: a run directory
// whose socket paths do not fit under the first goes there). TempBase is
// not checked or made here; use Ensure or Check on it before use.
func RuntimeBases() []string {
	var bases []string
	if d, _ := RuntimeDir(); d != "" {
		bases = append(bases, d)
	}
	return append(bases, TempBase())
}

// CacheDir is sonix-run's cache directory, made if missing and checked:
// $XDG_CACHE_HOME/sonix-run or ~/.cache/sonix-run (the OS's user cache
// directory), else, where that cannot be made (no home, or a read-only one
// as in Nix's build sandbox), TempBase()/cache. err when no place can be
// used: callers then do without a cache. It is looked for afresh on each
// call (a few system calls), so it follows the environment.
func CacheDir() (string, error) {
	c := findCache()
	return c.dir, c.err
}

// CacheNotice is a one-line notice when the cache is not in its usual
// place, or cannot be kept at all; "" otherwise.
func CacheNotice() string {
	c := findCache()
	switch {
	case c.err != nil:
		return oneLine("not caching (kernels, KVM probe): " + c.err.Error())
	case c.why != nil:
		return oneLine(fmt.Sprintf("caching in %s: %v", c.dir, c.why))
	}
	return ""
}

// oneLine keeps a notice on one line whatever an error text holds.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

type cacheChoice struct {
	dir string
	why error // why the usual place was not used
	err error
}

var findCache = chooseCache

func chooseCache() cacheChoice {
	var why error
	if user, err := os.UserCacheDir(); err != nil {
		why = err
	} else {
		dir := filepath.Join(user, "sonix-run")
		if why = EnsureIn(dir, Cache); why == nil {
			return cacheChoice{dir: dir}
		}
	}
	base := TempBase()
	if err := Ensure(base, Private); err != nil {
		return cacheChoice{err: fmt.Errorf("%v; %v", why, err)}
	}
	dir := filepath.Join(base, "cache")
	if err := Ensure(dir, Cache); err != nil {
		return cacheChoice{err: fmt.Errorf("%v; %v", why, err)}
	}
	return cacheChoice{dir: dir, why: why}
}
