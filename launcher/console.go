package launcher

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/term"
)

// EscapeKey is Ctrl-a, the prefix of console commands (as in QEMU and screen).
const EscapeKey = 0x01

// EscapeHelp lists the console keys.
const EscapeHelp = "sonix-run console keys:\n" +
	"  Ctrl-a x       stop the VM and exit\n" +
	"  Ctrl-a h       this help\n" +
	"  Ctrl-a Ctrl-a  send Ctrl-a to the guest\n"

// console connects the user's terminal (or pipes) to the guest's console:
// guest output to stdout and the console log, stdin to the guest. sonix-run
// owns this for every backend, so the keys, the log and the terminal's
// restoration behave the same under QEMU and Virtualization.framework.
type console struct {
	guest   Console  // the ends the backend hands to the guest
	toGuest *os.File // we write the guest's input here
	fromVM  *os.File // we read the guest's output here
	log     *os.File

	stderr  io.Writer
	raw     bool
	restore func() error

	quit     chan struct{} // closed by Ctrl-a x
	quitOnce sync.Once
	outDone  chan struct{} // the guest's output has all been copied
}

func openConsole(cfg *Config) (*console, error) {
	c := &console{stderr: cfg.Stderr, quit: make(chan struct{}), outDone: make(chan struct{})}
	var err error
	if c.guest.In, c.toGuest, err = os.Pipe(); err != nil {
		return nil, err
	}
	if c.fromVM, c.guest.Out, err = os.Pipe(); err != nil {
		return nil, err
	}
	// A failing stdout or log must not stop the copy: the guest would block
	// writing to its console.
	var out io.Writer = &lenient{w: cfg.Stdout}
	if cfg.Command != "" {
		// The command's output owns stdout: boot messages go to the log,
		// and to stderr only when asked.
		out = io.Discard
		if cfg.Verbose {
			out = &lenient{w: cfg.Stderr}
		}
	}
	if cfg.ConsoleLog != "" {
		// Append, never truncate: the log may hold earlier runs.
		if c.log, err = os.OpenFile(cfg.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("--console-log: %w", err)
		}
		out = io.MultiWriter(out, &lenient{w: c.log})
	}
	go func() {
		defer close(c.outDone)
		io.Copy(out, c.fromVM)
	}()
	if cfg.Stdin != nil && cfg.Command == "" {
		if fd := int(cfg.Stdin.Fd()); term.IsTerminal(fd) {
			state, err := term.MakeRaw(fd)
			if err != nil {
				return nil, fmt.Errorf("putting the terminal in raw mode: %w", err)
			}
			c.raw = true
			c.restore = func() error { return term.Restore(fd, state) }
			go c.forwardKeys(cfg.Stdin)
		} else {
			// Not a terminal: bytes pass through untouched; at EOF the guest
			// simply gets no more input, and the run goes on.
			go io.Copy(c.toGuest, cfg.Stdin)
		}
	}
	return c, nil
}

// started closes sonix-run's copies of the guest's ends once the backend has
// handed them to the hypervisor, so the output copy ends when the VM does.
func (c *console) started() {
	c.guest.In.Close()
	c.guest.Out.Close()
}

// forwardKeys copies terminal input to the guest, acting on Ctrl-a commands.
func (c *console) forwardKeys(in io.Reader) {
	buf := make([]byte, 256)
	escaped := false
	for {
		n, err := in.Read(buf)
		if err != nil {
			return
		}
		out := make([]byte, 0, n)
		for _, b := range buf[:n] {
			switch {
			case escaped:
				escaped = false
				switch b {
				case 'x', 'X':
					c.quitOnce.Do(func() { close(c.quit) })
				case 'h', 'H', '?':
					c.notice("%s", strings.TrimSuffix(EscapeHelp, "\n"))
				case EscapeKey:
					out = append(out, EscapeKey)
				}
			case b == EscapeKey:
				escaped = true
			default:
				out = append(out, b)
			}
		}
		if _, err := c.toGuest.Write(out); err != nil {
			return
		}
	}
}

// notice prints a line of sonix-run's own on stderr, with a carriage
// return while the terminal is raw.
func (c *console) notice(format string, args ...any) {
	msg := fmt.Sprintf(format, args...) + "\n"
	if c.raw {
		msg = "\r" + strings.ReplaceAll(msg, "\n", "\r\n")
	}
	io.WriteString(c.stderr, msg)
}

// close waits until all guest output is written, then restores the terminal.
func (c *console) close() error {
	<-c.outDone
	c.toGuest.Close()
	var err error
	if c.restore != nil {
		if rerr := c.restore(); rerr != nil {
			err = fmt.Errorf("restoring the terminal: %w", rerr)
		}
	}
	if c.log != nil {
		c.log.Close()
	}
	return err
}

// lenient drops writes after its writer fails (a closed stdout, a full
// disk), so the other destinations still get everything.
type lenient struct {
	w      io.Writer
	failed bool
}

func (l *lenient) Write(p []byte) (int, error) {
	if !l.failed {
		if _, err := l.w.Write(p); err != nil {
			l.failed = true
		}
	}
	return len(p), nil
}
