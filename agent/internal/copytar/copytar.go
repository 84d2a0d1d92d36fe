// Package copytar archives a file or directory tree as tar and extracts
// such an archive safely, with the semantics of docker cp: the put and get
// operations of the agent protocol (docs/harness.md) on both ends.
package copytar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Unix mode bits as tar stores them.
const (
	tarSetuid = 0o4000
	tarSetgid = 0o2000
	tarSticky = 0o1000
)

// Write writes a tar archive of src to w. Its one top-level entry is src
// under its base name; a directory brings everything under it. Regular
// files, directories and symbolic links (never followed, src included) are
// archived with their permission bits and modification times; owners are
// not. Any other kind of file is an error naming it.
func Write(w io.Writer, src string) error {
	clean := filepath.Clean(src)
	top := filepath.Base(clean)
	if top == string(filepath.Separator) || top == "." || top == ".." {
		return fmt.Errorf("cannot copy %q: the path must end in a name", src)
	}
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(clean, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(clean, p)
		if err != nil {
			return err
		}
		name := top
		if rel != "." {
			name = top + "/" + filepath.ToSlash(rel)
		}
		return writeEntry(tw, p, name, fi)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, p, name string, fi fs.FileInfo) error {
	m := fi.Mode()
	h := &tar.Header{
		Name:    name,
		Mode:    int64(m.Perm()),
		ModTime: fi.ModTime(),
		Format:  tar.FormatPAX, // keeps long names and sub-second times
	}
	if m&fs.ModeSetuid != 0 {
		h.Mode |= tarSetuid
	}
	if m&fs.ModeSetgid != 0 {
		h.Mode |= tarSetgid
	}
	if m&fs.ModeSticky != 0 {
		h.Mode |= tarSticky
	}
	switch {
	case m.IsRegular():
		h.Typeflag = tar.TypeReg
		h.Size = fi.Size()
	case m.IsDir():
		h.Typeflag = tar.TypeDir
		h.Name += "/"
	case m&fs.ModeSymlink != 0:
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		h.Typeflag = tar.TypeSymlink
		h.Linkname = link
	default:
		return fmt.Errorf("cannot copy %s: it is a %s, not a file, directory or symbolic link", p, kind(m))
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(tw, f, h.Size); err != nil {
		if err == io.EOF {
			return fmt.Errorf("archiving %s: it shrank while being copied", p)
		}
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n > 0 {
		return fmt.Errorf("archiving %s: it grew while being copied", p)
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// Options tune Extract.
type Options struct {
	// KeepSetID keeps setuid and setgid bits. The host leaves it off: a
	// guest must not be able to plant setuid programs of the host's user.
	KeepSetID bool
}

type dirMeta struct {
	path  string
	mode  fs.FileMode
	mtime time.Time
}

// Extract creates the contents of a tar archive made by Write at dst, as
// docker cp does: when dst is an existing directory, the archive's
// top-level entry is created inside it; otherwise dst is the new name of
// that entry, and its parent must be an existing directory. Existing files
// are replaced; existing directories are merged into.
//
// An archive from the other side is hostile input: entry names must be
// relative, without "." or ".." components, and all under one top-level
// name; entries must come after their parent directories; nothing is ever
// written through a symbolic link below dst (links in the archive are
// created as links, never followed). Only files, directories and symbolic
// links are accepted. On error, what was extracted so far stays.
func Extract(r io.Reader, dst string, opt Options) error {
	root, rename, err := destination(dst)
	if err != nil {
		return err
	}
	tr := tar.NewReader(r)
	var top string
	var dirs []dirMeta
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		rel, err := checkName(h.Name)
		if err != nil {
			return err
		}
		first, rest, _ := strings.Cut(rel, "/")
		if top == "" {
			top = first
		} else if first != top {
			return fmt.Errorf("archive entry %q: not under the top-level entry %q", h.Name, top)
		}
		if rename != "" {
			rel = rename
			if rest != "" {
				rel += "/" + rest
			}
		}
		if err := checkParents(root, rel); err != nil {
			return err
		}
		target := filepath.Join(root, filepath.FromSlash(rel))
		mode := entryMode(h.Mode, opt)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := makeDir(target); err != nil {
				return err
			}
			dirs = append(dirs, dirMeta{target, mode, h.ModTime})
		case tar.TypeReg:
			if isSparse(h) {
				// archive/tar expands sparse files: a few bytes of archive
				// could fill the disk with zeros. Write never makes them.
				return fmt.Errorf("archive entry %q: sparse files are not supported", h.Name)
			}
			if err := writeFile(target, tr, mode, h.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if h.Linkname == "" {
				return fmt.Errorf("archive entry %q: a symbolic link with an empty target", h.Name)
			}
			if err := replaceable(target); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %q: type %q is not supported (only files, directories and symbolic links)", h.Name, h.Typeflag)
		}
	}
	if top == "" {
		return errors.New("the archive is empty")
	}
	// Directory modes and times last: a read-only directory must still
	// take its entries, and writing entries changes a directory's mtime.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chtimes(d.path, d.mtime, d.mtime); err != nil {
			return err
		}
	}
	return nil
}

func isSparse(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// destination resolves dst to the directory to extract into and the new
// name of the top-level entry ("" to keep it).
func destination(dst string) (root, rename string, err error) {
	fi, err := os.Stat(dst)
	switch {
	case err == nil && fi.IsDir():
		root = dst
	case err == nil || errors.Is(err, fs.ErrNotExist):
		if strings.HasSuffix(dst, "/") {
			return "", "", fmt.Errorf("destination %s: no such directory", dst)
		}
		clean := filepath.Clean(dst)
		rename = filepath.Base(clean)
		if rename == "." || rename == ".." || rename == string(filepath.Separator) {
			return "", "", fmt.Errorf("destination %q: the path must end in a name", dst)
		}
		root = filepath.Dir(clean)
		pfi, err := os.Stat(root)
		if err != nil {
			return "", "", fmt.Errorf("destination %s: its directory: %w", dst, err)
		}
		if !pfi.IsDir() {
			return "", "", fmt.Errorf("destination %s: %s is not a directory", dst, root)
		}
	default:
		return "", "", fmt.Errorf("destination %s: %w", dst, err)
	}
	// The destination itself is the user's choice and may be reached
	// through links; below it, nothing is followed.
	root, err = filepath.EvalSymlinks(root)
	return root, rename, err
}

// checkName returns an entry's name without a trailing slash, refusing
// absolute names and empty, "." or ".." components.
func checkName(name string) (string, error) {
	rel := strings.TrimSuffix(name, "/")
	if rel == "" {
		return "", errors.New("archive entry with an empty name")
	}
	if strings.HasPrefix(rel, "/") {
		return "", fmt.Errorf("archive entry %q: absolute names are refused", name)
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("archive entry %q: empty, \".\" and \"..\" components are refused", name)
		}
	}
	return rel, nil
}

// checkParents checks that every directory above rel, below root, exists
// and is a real directory, not a symbolic link.
func checkParents(root, rel string) error {
	p := root
	parts := strings.Split(rel, "/")
	for _, c := range parts[:len(parts)-1] {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("archive entry %q: its directory %s: %w", rel, p, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("archive entry %q: %s is not a directory (symbolic links are not followed)", rel, p)
		}
	}
	return nil
}

func entryMode(m int64, opt Options) fs.FileMode {
	mode := fs.FileMode(m).Perm()
	if m&tarSticky != 0 {
		mode |= fs.ModeSticky
	}
	if opt.KeepSetID && m&tarSetuid != 0 {
		mode |= fs.ModeSetuid
	}
	if opt.KeepSetID && m&tarSetgid != 0 {
		mode |= fs.ModeSetgid
	}
	return mode
}

func makeDir(target string) error {
	fi, err := os.Lstat(target)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("cannot replace %s with a directory: it is not one", target)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return os.Mkdir(target, 0o700)
}

// replaceable removes what is at target unless it is a directory.
func replaceable(target string) error {
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("cannot replace the directory %s with a file", target)
	}
	return os.Remove(target)
}

func writeFile(target string, r io.Reader, mode fs.FileMode, mtime time.Time) error {
	if err := replaceable(target); err != nil {
		return err
	}
	// O_EXCL: created here, never opened through a link that appeared.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", target, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chtimes(target, mtime, mtime)
}

// CheckDestination checks dst as Extract will, before any archive is read.
func CheckDestination(dst string) error {
	_, _, err := destination(dst)
	return err
}
