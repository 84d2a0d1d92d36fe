package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/pollfile"
	"github.com/sonix-run/sonix-run/vmm"
)

// EscapeKey is Ctrl-a, the prefix of console commands (as in QEMU and screen).
const EscapeKey = 0x01

// EscapeHelp lists the console keys.
const EscapeHelp = "sonix-run console keys:\n" +
	"  Ctrl-a x       stop the VM and exit\n" +
	"  Ctrl-a h       this help\n" +
	"  Ctrl-a Ctrl-a  send Ctrl-a to the guest"

// console connects the user's terminal (or pipes) to the guest's console:
// guest output to stdout and the console log, stdin to the guest. sonix-run
// owns this for every backend, so the keys, the log and the terminal's
// restoration behave the same under QEMU and Virtualization.framework.
type console struct {
	guest   vmm.Console // the ends the backend hands to the guest
	toGuest *os.File    // we write the guest's input here
	fromVM  *os.File    // we read the guest's output here
	msgs    *messages

	quit     chan struct{} // closed by Ctrl-a x
	quitOnce sync.Once
	outDone  chan struct{} // the guest's output has all been copied
	outErr   error         // why not all of it could be written, once outDone
}

// consoleDrain bounds how long the end of a run waits for the guest's last
// console output to be written (a stdout pipe nobody reads never drains).
const consoleDrain = 2 * time.Second

// openConsole creates the console and pushes the undo of each part on cl
// as it is made, so a failure half-way leaks nothing.
func openConsole(cfg *config.Config, out *output, msgs *messages, cl *cleanups) (*console, error) {
	c := &console{msgs: msgs, quit: make(chan struct{}), outDone: make(chan struct{})}
	var err error
	if c.guest.In, c.toGuest, err = os.Pipe(); err != nil {
		return nil, err
	}
	cl.push("console input pipe", time.Second, func(context.Context) error {
		c.guest.In.Close()
		return c.toGuest.Close()
	})
	if c.fromVM, c.guest.Out, err = os.Pipe(); err != nil {
		return nil, err
	}
	cl.push("console output pipe", time.Second, func(context.Context) error {
		c.guest.Out.Close()
		return c.fromVM.Close()
	})
	// A failing stdout or log must not stop the copy: the guest would block
	// writing to its console.
	var dest io.Writer = &lenient{w: out.stdout}
	if cfg.Command != nil {
		// The command's output owns stdout: boot messages go to the log,
		// and to stderr only when asked.
		dest = &stallWatcher{msgs: msgs}
		if cfg.Verbose {
			dest = &lenient{w: out.stderr}
		}
	}
	if cfg.ConsoleLog != "" {
		// Append, never truncate: the log may hold earlier runs.
		log, err := os.OpenFile(cfg.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--console-log: %w", err)
		}
		cl.push("console log", time.Second, func(context.Context) error { return log.Close() })
		dest = io.MultiWriter(dest, &lenient{w: log})
	}
	go func() {
		defer close(c.outDone)
		_, err := io.Copy(dest, c.fromVM)
		c.outErr = err
	}()
	cl.push("console output", consoleDrain+time.Second, c.drain)
	if cfg.Stdin != nil && cfg.Command == nil {
		if err := c.forwardInput(cfg.Stdin, msgs, cl); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// forwardInput copies the user's stdin to the guest: a terminal in raw
// mode with the Ctrl-a keys, anything else byte for byte (at its end the
// guest simply gets no more input, and the run goes on).
func (c *console) forwardInput(stdin *os.File, msgs *messages, cl *cleanups) error {
	in := io.Reader(stdin)
	if p, ok := pollfile.Reopen(stdin, os.O_RDONLY); ok {
		in = p
		cl.push("console input", time.Second, func(context.Context) error { return p.Close() })
	}
	done := make(chan struct{})
	if fd := int(stdin.Fd()); term.IsTerminal(fd) {
		state, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		msgs.setRaw(true)
		cl.push("terminal", time.Second, func(context.Context) error {
			msgs.setRaw(false)
			if err := term.Restore(fd, state); err != nil {
				return fmt.Errorf("restoring the terminal: %w", err)
			}
			return nil
		})
		go func() { defer close(done); c.forwardKeys(in) }()
	} else {
		go func() { defer close(done); io.Copy(c.toGuest, in) }()
	}
	// Pushed last, undone first: the reader is closed (above) after this
	// has asked it to stop; a stdin that cannot be interrupted (a socket)
	// is left to the process's exit, the one read sonix-run cannot bound.
	cl.push("console input reader", 2*time.Second, func(ctx context.Context) error {
		if p, ok := in.(*os.File); ok && p != stdin {
			p.SetReadDeadline(time.Now())
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
		return nil
	})
	return nil
}

// started closes sonix-run's copies of the guest's ends once the backend has
// handed them to the hypervisor, so the output copy ends when the VM does.
func (c *console) started() {
	c.guest.In.Close()
	c.guest.Out.Close()
}

// drain waits until all guest output is written, within consoleDrain.
func (c *console) drain(ctx context.Context) error {
	t := time.NewTimer(consoleDrain)
	defer t.Stop()
	select {
	case <-c.outDone:
		if c.outErr != nil && !errors.Is(c.outErr, os.ErrClosed) {
			return fmt.Errorf("copying the guest's output: %w", c.outErr)
		}
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	// Nobody reads stdout: the rest of the output is dropped so the run can end.
	c.fromVM.Close()
	return errors.New("the guest's last console output could not be written (stdout is not being read); it was dropped")
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
					c.msgs.notice("%s", strings.TrimSuffix(EscapeHelp, "\n"))
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

// output is where the guest's output goes: the user's stdout and stderr,
// reopened so that a write blocked on a full pipe can be cut off when the
// run must end (abort).
type output struct {
	stdout, stderr io.Writer
	files          []*os.File // our reopened descriptors
}

func newOutput(cfg *config.Config, cl *cleanups) *output {
	o := &output{stdout: cfg.Stdout, stderr: cfg.Stderr}
	for _, w := range []*io.Writer{&o.stdout, &o.stderr} {
		if f, ok := (*w).(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeNamedPipe != 0 {
				if p, ok := pollfile.Reopen(f, os.O_WRONLY); ok {
					*w = p
					o.files = append(o.files, p)
				}
			}
		}
	}
	// Undone late, after the console has drained: a write still blocked on
	// a full pipe then (nobody reads stdout) is cut off, so the run ends.
	cl.push("output", time.Second, func(context.Context) error {
		o.abort()
		for _, f := range o.files {
			f.Close()
		}
		return nil
	})
	return o
}

// abort makes every write still blocked on a full pipe fail at once.
func (o *output) abort() {
	for _, f := range o.files {
		f.SetWriteDeadline(time.Now())
	}
}
