//go:build linux || darwin

package copytar

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Destination is where Extract writes, opened before any archive is read.
// The destination path itself is the user's choice and is reached through
// links as the kernel resolves it; below it nothing is followed.
type Destination struct {
	path string
	fd   int // the directory that receives the copy
	// name is the name the top-level entry takes in fd; "" when path is an
	// existing directory (the entry goes in under its own name, or, for
	// SRC/., its contents merge into it).
	name string
	// mustDir: path ends in "/" and does not exist, so only a directory
	// can be created there.
	mustDir bool
	used    bool
}

// OpenDestination opens dst as docker cp reads it: an existing directory
// (a link to one followed) receives the copy inside it; any other path is
// the copy's new name, and its parent must be an existing directory. A
// path ending in "/" must be a directory, or not exist (then only a
// directory can be copied there).
func OpenDestination(dst string) (*Destination, error) {
	if dst == "" {
		return nil, errors.New("the destination path is empty")
	}
	fd, err := openDir(dst)
	if err == nil {
		return &Destination{path: dst, fd: fd}, nil
	}
	trailing := strings.HasSuffix(dst, "/") || strings.HasSuffix(dst, "/.")
	switch {
	case errors.Is(err, unix.ENOTDIR) && trailing:
		return nil, fmt.Errorf("destination %s: not a directory", dst)
	case !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR):
		return nil, fmt.Errorf("destination %s: %w", dst, err)
	}
	clean := filepath.Clean(dst)
	name := filepath.Base(clean)
	if name == "/" || name == "." || name == ".." {
		return nil, fmt.Errorf("destination %q: the path must end in a name", dst)
	}
	parent := filepath.Dir(clean)
	pfd, perr := openDir(parent)
	switch {
	case errors.Is(perr, unix.ENOENT):
		return nil, fmt.Errorf("destination %s: its directory %s does not exist", dst, parent)
	case errors.Is(perr, unix.ENOTDIR):
		return nil, fmt.Errorf("destination %s: %s is not a directory", dst, parent)
	case perr != nil:
		return nil, fmt.Errorf("destination %s: its directory %s: %w", dst, parent, perr)
	}
	return &Destination{path: dst, fd: pfd, name: name, mustDir: trailing}, nil
}

// Close releases the destination.
func (d *Destination) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Extract opens dst and extracts the archive there: OpenDestination, then
// Destination.Extract.
func Extract(r io.Reader, dst string, opt Options) error {
	d, err := OpenDestination(dst)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Extract(r, opt)
}

// Extract creates the contents of a tar archive made by Write, reading r
// to its end (a stream's end comes after the archive's: what follows the
// archive must be at most 64 KiB and is discarded).
//
// The top-level entry (it must come first, and every other entry under
// it) takes the destination's name: inside an existing directory its own,
// else the destination's; for SRC/. ("." in the archive) the contents
// merge into an existing directory, or make a new one. A new top-level
// entry is built under a temporary name beside its final one and renamed
// into place only once the whole archive (and the stream's end) has been
// read, so that a copy that fails leaves nothing new behind and a file
// replaced is replaced at once. Merging into an existing directory
// replaces files and symbolic links, merges into directories, never
// replaces a directory with anything else or anything else with a
// directory, and leaves every existing directory's mode and times as they
// were (the kernel updates the times of a directory whose entries
// change); what was merged before an error stays.
//
// An archive from the other side is hostile input: names must be
// relative, without ".." or empty components; entries must come after
// their directories; nothing is written through a link (links in the
// archive are created as links); only files, directories and symbolic
// links are accepted (hard links and sparse files are refused); the
// bounds of opt are checked before an entry is written.
func (d *Destination) Extract(r io.Reader, opt Options) error {
	if d.used || d.fd < 0 {
		return errors.New("copytar: a destination extracts one archive")
	}
	d.used = true
	e := &extractor{d: d, opt: opt, br: &budgetReader{r: r}, rootfd: -1, euid: os.Geteuid(), buf: make([]byte, 64<<10)}
	e.tr = tar.NewReader(e.br)
	err := e.run()
	e.closeStack()
	if err != nil {
		e.abort()
		return err
	}
	e.closeRoot()
	return nil
}

type extractor struct {
	d    *Destination
	opt  Options
	br   *budgetReader
	tr   *tar.Reader
	euid int
	buf  []byte

	top     string // the archive's top-level name
	rootfd  int    // the directory the top-level entry is: the entries below it go in there
	rootOwn bool   // rootfd is ours to close (not d.fd)

	// A new top-level entry is built as tmp in parent and renamed to
	// final at the end.
	parent     int
	tmp, final string
	tmpDir     bool
	topMode    uint32 // for a new top-level directory: its mode at the end
	topMtime   time.Time

	// stack holds the open directories of the last entry's path below
	// rootfd: stack[i] is its component i.
	stack   []dirRef
	created []createdDir // directories created below rootfd, in order
	// nodes interns the paths of directories below rootfd, so that each
	// is kept once however often the stack leaves and comes back to it.
	nodes map[pathNode]*pathNode

	entries, bytes int64
	last           string // the last entry's name, for messages
}

type dirRef struct {
	node *pathNode
	fd   int
}

// pathNode is a directory's path below rootfd: its name in its parent.
type pathNode struct {
	parent *pathNode // nil below rootfd
	name   string
}

// node interns the path name in parent.
func (e *extractor) node(parent *pathNode, name string) *pathNode {
	k := pathNode{parent, name}
	if n, ok := e.nodes[k]; ok {
		return n
	}
	if e.nodes == nil {
		e.nodes = map[pathNode]*pathNode{}
	}
	n := &k
	e.nodes[k] = n
	return n
}

// rel is the components of a path node.
func (n *pathNode) rel() []string {
	var r []string
	for ; n != nil; n = n.parent {
		r = append(r, n.name)
	}
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return r
}

// createdDir is a directory this copy created below the root: at the end
// it is reopened, checked to be the same one, and given its mode and
// times.
type createdDir struct {
	node     *pathNode
	dev, ino uint64
	mode     uint32
	mtime    time.Time
}

func (e *extractor) run() error {
	h, comps, err := e.next()
	if err == io.EOF {
		return errors.New("the archive is empty")
	}
	if err != nil {
		return err
	}
	e.top = comps[0]
	if e.opt.Top != "" && e.top != e.opt.Top {
		return fmt.Errorf("the archive's top-level entry is %s, but %s was asked for; nothing was written", quote(e.top), quote(e.opt.Top))
	}
	if len(comps) != 1 {
		return fmt.Errorf("the archive's first entry %s is not its top-level entry %s", quote(h.Name), quote(e.top))
	}
	if err := e.placeTop(h); err != nil {
		return err
	}
	for {
		h, comps, err := e.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case comps[0] != e.top:
			return fmt.Errorf("archive entry %s: not under the top-level entry %s", quote(h.Name), quote(e.top))
		case len(comps) == 1:
			return fmt.Errorf("archive entry %s: the top-level entry comes twice", quote(h.Name))
		case e.rootfd < 0:
			return fmt.Errorf("archive entry %s: the top-level entry %s is not a directory", quote(h.Name), quote(e.top))
		}
		if err := e.entry(h, comps[1:]); err != nil {
			return err
		}
	}
	// The stream's end: for get, the guest's reply comes after the
	// archive, and nothing is committed before it.
	e.br.allow(maxTrailer)
	if _, err := io.Copy(io.Discard, e.br); err != nil {
		if e.br.over {
			return fmt.Errorf("more than %s of data after the archive's end", FormatBytes(maxTrailer))
		}
		return err
	}
	return e.commit()
}

// next reads the next entry's header and checks its name and the bounds.
func (e *extractor) next() (*tar.Header, []string, error) {
	for {
		e.br.allow(maxHeader)
		h, err := e.tr.Next()
		if err == io.EOF {
			return nil, nil, io.EOF
		}
		if err != nil {
			after := ""
			if e.last != "" {
				after = " after " + quote(e.last)
			}
			if e.br.over {
				return nil, nil, fmt.Errorf("reading the archive: the header of the entry%s takes more than %s (names are at most %d bytes)", after, FormatBytes(maxHeader), MaxName)
			}
			return nil, nil, fmt.Errorf("reading the archive%s: %w", after, err)
		}
		e.entries++
		e.last = h.Name
		if max := e.opt.MaxEntries; max > 0 && e.entries > max {
			return nil, nil, &LimitError{Bound: BoundEntries, Limit: max, Entry: h.Name}
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		comps, err := checkName(h.Name)
		if err != nil {
			return nil, nil, err
		}
		if max := e.opt.MaxDepth; max > 0 && len(comps) > max {
			return nil, nil, &LimitError{Bound: BoundDepth, Limit: int64(max), Entry: h.Name}
		}
		if err := e.checkEntry(h); err != nil {
			return nil, nil, err
		}
		return h, comps, nil
	}
}

// checkEntry checks an entry's type, and the bound on bytes for a file.
func (e *extractor) checkEntry(h *tar.Header) error {
	switch h.Typeflag {
	case tar.TypeDir:
	case tar.TypeReg:
		if isSparse(h) {
			// archive/tar expands sparse files: a few bytes of archive
			// could fill the disk with zeros. Write never makes them.
			return fmt.Errorf("archive entry %s: sparse files are not supported", quote(h.Name))
		}
		if max := e.opt.MaxBytes; max > 0 && h.Size > max-e.bytes {
			return &LimitError{Bound: BoundBytes, Limit: max, Entry: h.Name}
		}
		e.bytes += h.Size
	case tar.TypeSymlink:
		switch {
		case h.Linkname == "":
			return fmt.Errorf("archive entry %s: a symbolic link with an empty target", quote(h.Name))
		case len(h.Linkname) > MaxLink:
			return fmt.Errorf("archive entry %s: a symbolic link target of %d bytes (at most %d)", quote(h.Name), len(h.Linkname), MaxLink)
		case strings.IndexByte(h.Linkname, 0) >= 0:
			return fmt.Errorf("archive entry %s: a symbolic link target with a NUL byte", quote(h.Name))
		}
	case tar.TypeLink:
		return fmt.Errorf("archive entry %s: hard links are refused (only files, directories and symbolic links)", quote(h.Name))
	default:
		return fmt.Errorf("archive entry %s: type %q is not supported (only files, directories and symbolic links)", quote(h.Name), h.Typeflag)
	}
	return nil
}

func isSparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func typeName(h *tar.Header) string {
	switch h.Typeflag {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symbolic link"
	}
	return "file"
}

// placeTop decides where the top-level entry goes and creates it there,
// under a temporary name unless it merges into an existing directory.
func (e *extractor) placeTop(h *tar.Header) error {
	d := e.d
	dir := h.Typeflag == tar.TypeDir
	switch {
	case e.top == "." && !dir:
		return fmt.Errorf("the archive's top-level entry \".\" (the contents of a directory) is a %s", typeName(h))
	case e.opt.TopDir && !dir:
		return fmt.Errorf("the archive's top-level entry %s is a %s, but a directory was asked for", quote(e.top), typeName(h))
	case d.mustDir && !dir:
		return fmt.Errorf("destination %s: no such directory (a %s is copied into an existing directory, or to a new name without a trailing slash)", d.path, typeName(h))
	}
	if d.name == "" && e.top == "." {
		// SRC/. into an existing directory: the contents merge into it.
		e.rootfd = d.fd
		return nil
	}
	name, display := d.name, d.path
	if name == "" {
		name, display = e.top, filepath.Join(d.path, e.top)
	}
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && isDir(&st):
		if !dir {
			return fmt.Errorf("cannot overwrite the directory %s with a %s", display, typeName(h))
		}
		fd, err := openDirAt(d.fd, name)
		if err != nil {
			return fmt.Errorf("%s: %w", display, err)
		}
		e.rootfd, e.rootOwn = fd, true
		return nil
	case err == nil && dir:
		return fmt.Errorf("cannot overwrite %s, a %s, with a directory", display, kind(&st))
	case err != nil && !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s: %w", display, err)
	}
	e.parent, e.final = d.fd, name
	for i := 0; ; i++ {
		var b [8]byte
		rand.Read(b[:])
		e.tmp, e.tmpDir = ".sonix-run-cp-"+hex.EncodeToString(b[:]), dir
		err := e.create(d.fd, e.tmp, h, true)
		if err == nil {
			return nil
		}
		var errno unix.Errno
		if !errors.As(err, &errno) || err != errno {
			return err // the archive's, or described
		}
		if errno != unix.EEXIST || i == 10 {
			e.tmp = ""
			return fmt.Errorf("%s: creating it under a temporary name beside it: %w", display, err)
		}
		e.tmp = "" // someone else's: try another name
	}
}

// entry creates an entry below the root; rel is its name below the
// top-level entry.
func (e *extractor) entry(h *tar.Header, rel []string) error {
	pfd, err := e.dirAt(rel[:len(rel)-1], h.Name)
	if err != nil {
		return err
	}
	name := rel[len(rel)-1]
	if h.Typeflag == tar.TypeDir {
		err := e.create(pfd, name, h, false)
		if err != unix.EEXIST {
			return entryErr(h, err)
		}
		// It exists: a directory is merged into, left as it is.
		fd, err := openDirAt(pfd, name)
		if notDir(err) {
			return fmt.Errorf("archive entry %s: cannot overwrite what is there, not a directory, with a directory", quote(h.Name))
		}
		if err != nil {
			return entryErr(h, err)
		}
		e.push(name, fd)
		return nil
	}
	// A file or link replaces what is there, unless it is a directory.
	var st unix.Stat_t
	err = unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && isDir(&st):
		return fmt.Errorf("archive entry %s: cannot overwrite a directory with a %s", quote(h.Name), typeName(h))
	case err == nil:
		if err := unix.Unlinkat(pfd, name, 0); err != nil && err != unix.ENOENT {
			return entryErr(h, err)
		}
	case err != unix.ENOENT:
		return entryErr(h, err)
	}
	err = e.create(pfd, name, h, false)
	if err == unix.EEXIST {
		return fmt.Errorf("archive entry %s: something else was created there while it was being replaced", quote(h.Name))
	}
	return entryErr(h, err)
}

// entryErr names the entry in the error of a system call on it; other
// errors already say what they are about.
func entryErr(h *tar.Header, err error) error {
	if errno, ok := err.(unix.Errno); ok {
		return fmt.Errorf("archive entry %s: %w", quote(h.Name), errno)
	}
	return err
}

// create creates name in pfd as h says: EEXIST (unwrapped) if something
// is there. A directory is pushed on the stack (or, top, made the root).
func (e *extractor) create(pfd int, name string, h *tar.Header, top bool) error {
	switch h.Typeflag {
	case tar.TypeDir:
		return e.mkdir(pfd, name, h, top)
	case tar.TypeSymlink:
		return unix.Symlinkat(h.Linkname, pfd, name)
	}
	// O_EXCL|O_NOFOLLOW: created here, never opened through a link that
	// appeared. The kernel applies the umask to the mode.
	fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(h.Mode)&0o777)
	if err != nil {
		return err
	}
	err = e.writeFile(fd, h)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("archive entry %s: %w", quote(h.Name), cerr)
	}
	return err
}

// writeFile writes the entry's data to fd, then its mode and times.
func (e *extractor) writeFile(fd int, h *tar.Header) error {
	// The bytes were counted against the bound; the budget lets the
	// reader take them.
	e.br.add(h.Size)
	var done int64
	for {
		n, rerr := e.tr.Read(e.buf)
		for p := e.buf[:n]; len(p) > 0; {
			w, err := unix.Write(fd, p)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("archive entry %s: writing it: %w", quote(h.Name), err)
			}
			p = p[w:]
		}
		done += int64(n)
		if rerr == io.EOF {
			break
		}
		if errors.Is(rerr, io.ErrUnexpectedEOF) {
			return fmt.Errorf("archive entry %s: the archive ended inside it (%d of %d bytes)", quote(h.Name), done, h.Size)
		}
		if rerr != nil {
			return rerr
		}
	}
	var setid uint32
	if e.opt.KeepSetID {
		setid = uint32(h.Mode) & (tarSetuid | tarSetgid)
	}
	var err error
	switch {
	case e.opt.KeepMode:
		err = unix.Fchmod(fd, uint32(h.Mode)&0o777|setid|uint32(h.Mode)&tarSticky)
	case setid != 0:
		// After the data: writing clears these bits.
		var st unix.Stat_t
		if err = unix.Fstat(fd, &st); err == nil {
			err = unix.Fchmod(fd, uint32(st.Mode)&0o777|setid)
		}
	}
	if err == nil {
		err = futimens(fd, h.ModTime)
	}
	if err != nil {
		return fmt.Errorf("archive entry %s: %w", quote(h.Name), err)
	}
	return nil
}

// mkdir creates the directory name in pfd with the archive's mode (the
// kernel applies the umask), opens it without following links, checks
// that it is the one just created (a directory of this user's), learns
// its mode and makes it 0700 until the end: writable for its entries,
// closed to others while it fills.
func (e *extractor) mkdir(pfd int, name string, h *tar.Header, top bool) error {
	if err := unix.Mkdirat(pfd, name, uint32(h.Mode)&0o777); err != nil {
		return err
	}
	fd, err := openDirAt(pfd, name)
	var st unix.Stat_t
	if err == nil {
		if err = unix.Fstat(fd, &st); err == nil && (!isDir(&st) || int(st.Uid) != e.euid) {
			err = errors.New("it was replaced right after being created")
		}
		if err == nil {
			err = unix.Fchmod(fd, 0o700)
		}
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return fmt.Errorf("archive entry %s: the new directory: %w", quote(h.Name), err)
	}
	mode := e.dirMode(h, &st)
	if top {
		e.rootfd, e.rootOwn = fd, true
		e.topMode, e.topMtime = mode, h.ModTime
		return nil
	}
	e.push(name, fd)
	e.created = append(e.created, createdDir{node: e.stack[len(e.stack)-1].node, dev: uint64(st.Dev), ino: uint64(st.Ino), mode: mode, mtime: h.ModTime})
	return nil
}

// push puts the directory name, open at fd, on the stack.
func (e *extractor) push(name string, fd int) {
	var parent *pathNode
	if len(e.stack) > 0 {
		parent = e.stack[len(e.stack)-1].node
	}
	e.stack = append(e.stack, dirRef{e.node(parent, name), fd})
}

// dirMode is the mode a new directory gets at the end: as created (the
// umask applied, a setgid bit inherited from its parent kept), or the
// archive's with KeepMode; the sticky bit from the archive, setuid and
// setgid with KeepSetID.
func (e *extractor) dirMode(h *tar.Header, st *unix.Stat_t) uint32 {
	m := uint32(st.Mode) & (0o777 | unix.S_ISGID)
	if e.opt.KeepMode {
		m = uint32(h.Mode) & 0o777
	}
	m |= uint32(h.Mode) & tarSticky
	if e.opt.KeepSetID {
		m |= uint32(h.Mode) & (tarSetuid | tarSetgid)
	}
	return m
}

// dirAt opens the directory rel below the root, one component at a time,
// never through a link, reusing the directories of the last entry.
func (e *extractor) dirAt(rel []string, entry string) (int, error) {
	i := 0
	for i < len(e.stack) && i < len(rel) && e.stack[i].node.name == rel[i] {
		i++
	}
	e.truncate(i)
	for ; i < len(rel); i++ {
		pfd := e.rootfd
		if i > 0 {
			pfd = e.stack[i-1].fd
		}
		fd, err := openDirAt(pfd, rel[i])
		if err != nil {
			dir := quote(e.top + "/" + strings.Join(rel[:i+1], "/"))
			switch {
			case notDir(err):
				return -1, fmt.Errorf("archive entry %s: %s is not a directory (symbolic links are not followed)", quote(entry), dir)
			case errors.Is(err, unix.ENOENT):
				return -1, fmt.Errorf("archive entry %s: its directory %s does not exist (an entry must come after its directory)", quote(entry), dir)
			}
			return -1, fmt.Errorf("archive entry %s: its directory %s: %w", quote(entry), dir, err)
		}
		e.push(rel[i], fd)
	}
	if len(rel) == 0 {
		return e.rootfd, nil
	}
	return e.stack[len(rel)-1].fd, nil
}

func (e *extractor) truncate(n int) {
	for _, r := range e.stack[n:] {
		unix.Close(r.fd)
	}
	e.stack = e.stack[:n]
}

func (e *extractor) closeStack() { e.truncate(0) }

func (e *extractor) closeRoot() {
	if e.rootOwn {
		unix.Close(e.rootfd)
		e.rootOwn = false
	}
	e.rootfd = -1
}

// commit gives the directories created their modes and times, children
// first, each reopened from the root and checked to be the one created;
// then renames a new top-level entry into place.
func (e *extractor) commit() error {
	e.closeStack()
	for i := len(e.created) - 1; i >= 0; i-- {
		c := e.created[i]
		rel := c.node.rel()
		name := e.top + "/" + strings.Join(rel, "/") + "/"
		fd, err := e.dirAt(rel, name)
		if err != nil {
			return fmt.Errorf("the directory %s was replaced during the copy: %w", quote(name), err)
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		if err == nil && (uint64(st.Dev) != c.dev || uint64(st.Ino) != c.ino) {
			err = errors.New("it was replaced during the copy")
		}
		if err == nil {
			err = unix.Fchmod(fd, c.mode)
		}
		if err == nil {
			err = futimens(fd, c.mtime)
		}
		if err != nil {
			return fmt.Errorf("archive entry %s: %w", quote(name), err)
		}
	}
	e.closeStack()
	if e.tmp == "" {
		return nil
	}
	final := filepath.Join(e.d.path, e.final)
	if e.d.name != "" {
		final = e.d.path
	}
	if e.tmpDir {
		if err := unix.Fchmod(e.rootfd, e.topMode); err != nil {
			return err
		}
		if err := futimens(e.rootfd, e.topMtime); err != nil {
			return err
		}
		// Never over anything that appeared meanwhile.
		if err := renameNoReplace(e.parent, e.tmp, e.parent, e.final); err != nil {
			if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
				return fmt.Errorf("%s appeared during the copy; the copy was not put in its place", final)
			}
			return fmt.Errorf("putting the copy in place at %s: %w", final, err)
		}
	} else if err := unix.Renameat(e.parent, e.tmp, e.parent, e.final); err != nil {
		if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("cannot overwrite the directory %s (it appeared during the copy)", final)
		}
		return fmt.Errorf("putting the copy in place at %s: %w", final, err)
	}
	e.tmp = ""
	return nil
}

// abort removes a new top-level entry that was not put in place.
func (e *extractor) abort() {
	e.closeStack()
	e.closeRoot()
	if e.tmp != "" {
		removeTree(e.parent, e.tmp)
		e.tmp = ""
	}
}

// budgetReader reads at most its budget from r; past it, only the end of
// r may follow.
type budgetReader struct {
	r    io.Reader
	n    int64
	over bool
}

var errOverBudget = errors.New("the archive goes past what its headers allow")

// allow sets the budget.
func (b *budgetReader) allow(n int64) { b.n = n }

// add adds to the budget.
func (b *budgetReader) add(n int64) { b.n += n }

func (b *budgetReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.n <= 0 {
		var one [1]byte
		for i := 0; i < 100; i++ {
			n, err := b.r.Read(one[:])
			if n > 0 {
				b.over = true
				return 0, errOverBudget
			}
			if err != nil {
				return 0, err
			}
		}
		return 0, io.ErrNoProgress
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}
