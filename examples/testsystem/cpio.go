package testsystem

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
)

// cpioWriter writes a "newc" (SVR4 without CRC, magic 070701) cpio archive,
// the format the Linux kernel unpacks as an initramfs. All entries are owned
// by root and carry mtime 0 so that the archive is reproducible.
type cpioWriter struct {
	w      io.Writer
	n      int64 // bytes written so far, for padding
	ino    uint32
	err    error
	closed bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1}
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

type cpioHeader struct {
	name         string
	mode         uint32 // file type bits and permissions
	nlink        uint32
	size         int
	rmaj, rmin   uint32
	trailerEntry bool
}

func (c *cpioWriter) entry(h cpioHeader, data []byte) error {
	if c.closed {
		return errors.New("cpio: write after close")
	}
	name := strings.TrimLeft(h.name, "/")
	if !h.trailerEntry && (name == "" || strings.Contains(name, "\x00")) {
		return fmt.Errorf("cpio: bad entry name %q", h.name)
	}
	ino := uint32(0)
	if !h.trailerEntry {
		ino = c.ino
		c.ino++
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, h.mode, 0, 0, h.nlink, 0, len(data), 0, 0, h.rmaj, h.rmin, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
	c.write(data)
	c.pad()
	return c.err
}

// Dir adds a directory. Parents must be added before their contents.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	return c.entry(cpioHeader{name: name, mode: syscall.S_IFDIR | perm&0o7777, nlink: 2}, nil)
}

// File adds a regular file.
func (c *cpioWriter) File(name string, perm uint32, data []byte) error {
	return c.entry(cpioHeader{name: name, mode: syscall.S_IFREG | perm&0o7777, nlink: 1}, data)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) error {
	return c.entry(cpioHeader{name: name, mode: syscall.S_IFLNK | 0o777, nlink: 1}, []byte(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.entry(cpioHeader{name: name, mode: syscall.S_IFCHR | perm&0o7777, nlink: 1, rmaj: major, rmin: minor}, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	if c.closed {
		return c.err
	}
	err := c.entry(cpioHeader{name: "TRAILER!!!", nlink: 1, trailerEntry: true}, nil)
	c.closed = true
	return err
}
