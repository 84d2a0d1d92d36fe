//go:build linux || darwin

package copytar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// testHookOpen, when set, runs before Write opens a file or directory
// found by its parent's listing (tests swap it then).
var testHookOpen func(path string)

// Source is a file or directory to archive, its top opened.
type Source struct {
	spec Spec
	// For SRC/ and SRC/.: the directory itself (a link to one followed).
	// Otherwise the directory that holds SRC, which is archived as what
	// it is there, a link as a link.
	dir  *os.File
	base string
}

// OpenSource opens src for Write: a source that does not exist is an
// error now, before anything is sent.
func OpenSource(src string) (*Source, error) {
	spec, err := ParseSource(src)
	if err != nil {
		return nil, err
	}
	s := &Source{spec: spec}
	if spec.Dir {
		fd, err := openDir(spec.path)
		if err != nil {
			return nil, pathError("open", src, err)
		}
		s.dir = os.NewFile(uintptr(fd), spec.path)
		return s, nil
	}
	parent := filepath.Dir(spec.path)
	fd, err := openDir(parent)
	if err != nil {
		return nil, pathError("open", parent, err)
	}
	s.dir = os.NewFile(uintptr(fd), parent)
	s.base = filepath.Base(spec.path)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, s.base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		s.dir.Close()
		return nil, pathError("lstat", spec.path, err)
	}
	return s, nil
}

// Spec is what the source asked for.
func (s *Source) Spec() Spec { return s.spec }

// Close closes the source's directory.
func (s *Source) Close() error { return s.dir.Close() }

// Write writes a tar archive of the source to w. Its one top-level entry
// is the source under its base name ("." for SRC/.); a directory brings
// everything under it, parents before children, names sorted. Regular
// files, directories and symbolic links (never followed; the source too,
// unless it ends in "/" or "/.") are archived with their permission bits
// (setuid, setgid and sticky included) and modification times; owners are
// not. Any other kind of file is an error naming it.
//
// Every entry is opened relative to its directory's descriptor without
// following links, and without waiting (a named pipe swapped in is
// refused, not read), then checked through its own descriptor.
func (s *Source) Write(w io.Writer) error {
	a := &archiver{tw: tar.NewWriter(w), buf: make([]byte, 64<<10)}
	var err error
	if s.spec.Dir {
		var st unix.Stat_t
		if err := unix.Fstat(int(s.dir.Fd()), &st); err != nil {
			return err
		}
		if !isDir(&st) {
			return fmt.Errorf("cannot copy %s: not a directory", s.spec.path)
		}
		err = a.dir(s.dir, s.spec.Name, s.spec.path, &st)
	} else {
		err = a.entry(int(s.dir.Fd()), s.base, s.spec.Name, s.spec.path)
	}
	if err != nil {
		return err
	}
	return a.tw.Close()
}

// Write writes a tar archive of src to w: OpenSource, then Source.Write.
func Write(w io.Writer, src string) error {
	s, err := OpenSource(src)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Write(w)
}

type archiver struct {
	tw  *tar.Writer
	buf []byte
}

func header(st *unix.Stat_t, name string) *tar.Header {
	return &tar.Header{
		Name:    name,
		Mode:    int64(uint32(st.Mode) & 0o7777),
		ModTime: mtime(st),
		Format:  tar.FormatPAX, // keeps long names and sub-second times
	}
}

// entry archives name in dirfd as arcName; path names it in messages.
func (a *archiver) entry(dirfd int, name, arcName, path string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathError("lstat", path, err)
	}
	switch fileType(&st) {
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("archiving %s: it changed while being copied (no longer a symbolic link)", path)
		}
		if err != nil {
			return pathError("readlink", path, err)
		}
		h := header(&st, arcName)
		h.Typeflag = tar.TypeSymlink
		h.Linkname = target
		return a.writeHeader(h, path)
	case unix.S_IFREG, unix.S_IFDIR:
	default:
		return fmt.Errorf("cannot copy %s: it is a %s, not a file, directory or symbolic link", path, kind(&st))
	}
	if testHookOpen != nil {
		testHookOpen(path)
	}
	// O_NONBLOCK: opening a named pipe swapped in since the lstat does not
	// wait for a writer; O_NOCTTY: nor does a terminal become ours.
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EMLINK) {
		return fmt.Errorf("archiving %s: it changed while being copied (now a symbolic link, not followed)", path)
	}
	if err != nil {
		return pathError("open", path, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return pathError("fstat", path, err)
	}
	switch fileType(&st) {
	case unix.S_IFREG:
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return err
		}
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		return a.file(f, arcName, path, &st)
	case unix.S_IFDIR:
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		return a.dir(f, arcName, path, &st)
	}
	unix.Close(fd)
	return fmt.Errorf("cannot copy %s: it changed while being copied and is now a %s, not a file, directory or symbolic link", path, kind(&st))
}

func (a *archiver) writeHeader(h *tar.Header, path string) error {
	if err := a.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("archiving %s: %w", path, err)
	}
	return nil
}

// writerOnly hides the tar writer's other methods from io.CopyBuffer, so
// that it uses the archiver's buffer.
type writerOnly struct{ io.Writer }

func (a *archiver) file(f *os.File, arcName, path string, st *unix.Stat_t) error {
	h := header(st, arcName)
	h.Typeflag = tar.TypeReg
	h.Size = st.Size
	if err := a.writeHeader(h, path); err != nil {
		return err
	}
	n, err := io.CopyBuffer(writerOnly{a.tw}, io.LimitReader(f, h.Size), a.buf)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", path, err)
	}
	if n < h.Size {
		return fmt.Errorf("archiving %s: it shrank while being copied", path)
	}
	if n, _ := f.Read(a.buf[:1]); n > 0 {
		return fmt.Errorf("archiving %s: it grew while being copied", path)
	}
	return nil
}

func (a *archiver) dir(f *os.File, arcName, path string, st *unix.Stat_t) error {
	h := header(st, arcName+"/")
	h.Typeflag = tar.TypeDir
	if err := a.writeHeader(h, path); err != nil {
		return err
	}
	fd := int(f.Fd())
	names, err := readDirNames(fd)
	if err != nil {
		return pathError("readdir", path, err)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := a.entry(fd, n, arcName+"/"+n, filepath.Join(path, n)); err != nil {
			return err
		}
	}
	return nil
}
