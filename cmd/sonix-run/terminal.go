package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"golang.org/x/term"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/control"
	"github.com/sonix-run/sonix-run/internal/pollfile"
	"github.com/sonix-run/sonix-run/internal/termsafe"
)

// errNeedsTerminal: a command on a pseudo-terminal (shell, exec -t) needs
// the user's terminal on stdin; usage names what the user typed.
type errNeedsTerminal struct{ what string }

func (e *errNeedsTerminal) Error() string {
	return e.what + " needs a terminal on stdin (it runs the command on a pseudo-terminal); without one, use exec without -t"
}

// execIn runs cmd in the VM through its agent with the user's stdin,
// stdout and stderr: a stdin that is not a terminal is the command's; with
// cmd.TTY, stdin must be a terminal, which is put in raw mode (restored on
// every path) and whose size, and its changes, the guest's terminal takes.
// It returns the command's status (128+N when signal N killed it). what
// names the verb for messages ("shell", "exec -t").
func execIn(ctx context.Context, vm *control.VM, cmd agent.Command, what string, stdin *os.File, stdout, stderr io.Writer) (int, error) {
	if cmd.Dir == "" {
		cmd.Dir = vm.Owner.Workdir // --cwd: where commands run
	}
	stdio := agent.Stdio{Stdout: stdout, Stderr: stderr}
	if stdin != nil && term.IsTerminal(int(stdin.Fd())) {
		if !cmd.TTY {
			stdin = nil // a terminal's input would never end: the command gets none
		}
	} else if cmd.TTY {
		return -1, &errNeedsTerminal{what}
	}
	if stdin != nil {
		in := io.Reader(stdin)
		if p, ok := pollfile.Reopen(stdin, os.O_RDONLY); ok {
			defer p.Close()
			in = p
		}
		stdio.Stdin = in
	}
	if cmd.TTY {
		fd := int(stdin.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			cmd.Cols, cmd.Rows = uint16(w), uint16(h)
		}
		state, err := term.MakeRaw(fd)
		if err != nil {
			return -1, fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer term.Restore(fd, state)
		resize := make(chan agent.WinSize, 1)
		stdio.Resize = resize
		stop := watchWinch(fd, resize)
		defer stop()
	}
	status, err := vm.Agent().Exec(ctx, cmd, stdio)
	if ge := (*agent.GuestError)(nil); errors.As(err, &ge) && ge.Status > 0 {
		fmt.Fprintf(stderr, "sonix-run: %s\n", termsafe.Line(ge.Message))
		return ge.Status, nil
	}
	return status, err
}

// watchWinch sends the terminal's size on each SIGWINCH (latest wins); stop
// ends the watching goroutine and waits for it.
func watchWinch(fd int, out chan agent.WinSize) (stop func()) {
	sigs := make(chan os.Signal, 1)
	notifyWinch(sigs)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-sigs:
				w, h, err := term.GetSize(fd)
				if err != nil {
					continue
				}
				select { // drop a size not yet taken: only the latest counts
				case <-out:
				default:
				}
				out <- agent.WinSize{Rows: uint16(h), Cols: uint16(w)}
			case <-quit:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(quit)
		<-done
	}
}
