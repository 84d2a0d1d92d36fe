// Package copytar archives a file or directory tree as tar and extracts
// such an archive, with the semantics of docker cp (docs/copy.md): the put
// and get operations of the agent protocol (docs/protocol.md) on both ends.
//
// Both directions work on handles, never on paths below what the user
// named: Write reads every entry through a file descriptor opened without
// following links, relative to its directory's descriptor; Extract creates
// every entry relative to a directory descriptor it holds, with *at calls
// that never follow a link, and sets modes and times through the new
// entry's own descriptor. A local user who can write in the destination
// (a shared /tmp/build) and swaps a directory for a link while a copy runs
// can make the copy fail, never make it write, or change a mode, anywhere
// else.
package copytar

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Bounds that are not options: the kernel's for names, and this format's.
const (
	// MaxName bounds an entry's name in the archive, in bytes (Linux's
	// PATH_MAX).
	MaxName = 4096
	// MaxComponent bounds one component of a name (NAME_MAX).
	MaxComponent = 255
	// MaxLink bounds a symbolic link's target (PATH_MAX less its NUL).
	MaxLink = 4095
	// maxHeader bounds the archive bytes that one entry's header may take:
	// its PAX records and long names (a name and a link target of at most
	// 4 KiB each need far less) and the previous entry's padding. It keeps
	// a hostile archive from making the tar reader read and keep without
	// end (GNU sparse maps, huge PAX records).
	maxHeader = 64 << 10
	// maxTrailer bounds what may follow the archive's end blocks.
	maxTrailer = 64 << 10
)

// Unix mode bits as tar stores them.
const (
	tarSetuid = 0o4000
	tarSetgid = 0o2000
	tarSticky = 0o1000
)

// Spec is what a source path asks for.
type Spec struct {
	// Name is the archive's top-level entry: the source's base name, or
	// "." for DIR/. (the directory's contents).
	Name string
	// Dir says the source must be a directory: it ends in "/" or "/.".
	Dir bool
	// path is the source, cleaned.
	path string
}

// Contents says the source is DIR/.: the directory's contents are copied,
// not the directory under its name.
func (s Spec) Contents() bool { return s.Name == "." }

// ParseSource reads a source path: its base name is the archive's
// top-level entry, "SRC/." asks for the contents of the directory SRC,
// "SRC/" for the directory SRC (a link to one is followed, as the kernel
// does for a trailing slash). The path is cleaned lexically first, as
// Write and the other side both do, so both sides agree on the name.
func ParseSource(src string) (Spec, error) {
	if src == "" {
		return Spec{}, errors.New("the source path is empty")
	}
	clean := filepath.Clean(src)
	if src == "." || strings.HasSuffix(src, "/.") {
		return Spec{Name: ".", Dir: true, path: clean}, nil
	}
	base := filepath.Base(clean)
	if base == "/" || base == "." || base == ".." {
		return Spec{}, fmt.Errorf("cannot copy %q: the path must end in a name (DIR/. copies the contents of DIR)", src)
	}
	return Spec{Name: base, Dir: strings.HasSuffix(src, "/"), path: clean}, nil
}

// Options tune Extract. The bounds are off at zero.
type Options struct {
	// Top is the top-level name the archive must have: the Spec.Name of
	// what was asked for. An archive whose first entry has another name is
	// refused before anything is written. "" takes whatever the first
	// entry says (the guest, which trusts the host).
	Top string
	// TopDir requires the top-level entry to be a directory (SRC/).
	TopDir bool
	// KeepSetID keeps setuid and setgid bits. The host leaves it off: a
	// guest must not be able to plant setuid programs of the host's user.
	KeepSetID bool
	// KeepMode gives new entries the archive's permission bits exactly, as
	// tar does for root; otherwise the process's umask applies to them, as
	// for any file a program creates (the kernel applies it).
	KeepMode bool
	// MaxBytes bounds the file data, as the headers declare it (checked
	// before an entry is written).
	MaxBytes int64
	// MaxEntries bounds the entries, the top-level one included.
	MaxEntries int64
	// MaxDepth bounds the components of an entry's name, the top-level one
	// included.
	MaxDepth int
}

// The bounds of Options, for LimitError.Bound.
const (
	BoundBytes   = "bytes"
	BoundEntries = "entries"
	BoundDepth   = "depth"
)

// LimitError is an archive that goes past one of the bounds of Options.
type LimitError struct {
	Bound string // BoundBytes, BoundEntries or BoundDepth
	Limit int64
	Entry string // the archive entry that went past it
}

func (e *LimitError) Error() string {
	var what string
	switch e.Bound {
	case BoundBytes:
		what = FormatBytes(e.Limit) + " of file data"
	case BoundEntries:
		what = fmt.Sprintf("%d entries", e.Limit)
	case BoundDepth:
		what = fmt.Sprintf("%d levels of directories", e.Limit)
	}
	return fmt.Sprintf("archive entry %s: the copy goes past its bound of %s", quote(e.Entry), what)
}

// FormatBytes writes a size in the largest binary unit that divides it.
func FormatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// quote quotes a name for a message, escaping what a terminal would
// interpret and cutting a long one.
func quote(name string) string {
	if len(name) > 256 {
		return fmt.Sprintf("%q...", name[:256])
	}
	return fmt.Sprintf("%q", name)
}

// checkName returns the components of an entry's name (a trailing slash
// dropped), refusing absolute names, empty and ".." components, "."
// anywhere but first (the top-level entry of SRC/.), NUL bytes and names
// longer than the kernel takes.
func checkName(name string) ([]string, error) {
	if len(name) > MaxName {
		return nil, fmt.Errorf("archive entry %s: a name of %d bytes (at most %d)", quote(name), len(name), MaxName)
	}
	rel := strings.TrimSuffix(name, "/")
	switch {
	case rel == "":
		return nil, errors.New("archive entry with an empty name")
	case strings.HasPrefix(rel, "/"):
		return nil, fmt.Errorf("archive entry %s: absolute names are refused", quote(name))
	case strings.IndexByte(rel, 0) >= 0:
		return nil, fmt.Errorf("archive entry %s: a name with a NUL byte", quote(name))
	}
	comps := strings.Split(rel, "/")
	for i, c := range comps {
		if c == "" || c == ".." || c == "." && i > 0 {
			return nil, fmt.Errorf("archive entry %s: empty, \".\" and \"..\" components are refused", quote(name))
		}
		if len(c) > MaxComponent {
			return nil, fmt.Errorf("archive entry %s: a component of %d bytes (at most %d)", quote(name), len(c), MaxComponent)
		}
	}
	return comps, nil
}
