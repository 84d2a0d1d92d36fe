//go:build linux

package guest

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// A command's pseudo-terminal.
const (
	defaultRows      = 24
	defaultCols      = 80
	defaultEOFString = "\x04"
)

// openPTY opens a pseudo-terminal of size ws. The master is opened here
// rather than with creack/pty, whose Open and Setsize call File.Fd: that
// switches the master to blocking mode, and a blocked read could then
// neither time out nor be interrupted, which the end of a command needs.
func openPTY(ws wire.WinSize) (master, tty *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a pseudo-terminal (is devpts mounted on /dev/pts?): %w", err)
	}
	var n uint32
	cerr := control(m, func(fd int) error {
		var err error
		if n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN); err != nil {
			return err
		}
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
	if cerr != nil {
		m.Close()
		return nil, nil, fmt.Errorf("setting up a pseudo-terminal: %w", cerr)
	}
	t, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("opening a pseudo-terminal (is devpts mounted on /dev/pts?): %w", err)
	}
	return m, t, nil
}

// setWinSize resizes the terminal; the kernel sends SIGWINCH to its
// foreground process group.
func setWinSize(master *os.File, ws wire.WinSize) {
	control(master, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
}

// eofChar is the terminal's end-of-file character (Ctrl-D unless the
// command changed it).
func eofChar(master *os.File) []byte {
	c := []byte(defaultEOFString)
	control(master, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err == nil && t.Cc[unix.VEOF] != 0 {
			c[0] = t.Cc[unix.VEOF]
		}
		return err
	})
	return c
}

// control runs f on the file's descriptor without switching it to
// blocking mode.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
