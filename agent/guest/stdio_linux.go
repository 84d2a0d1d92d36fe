//go:build linux

package guest

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// pipeSize is the capacity the agent gives the command's pipes (the
// kernel's default is 64 KiB; 1 MiB is what /proc/sys/fs/pipe-max-size
// allows by default). The command and the agent take turns at a pipe:
// every time one waits for the other, both pay a wakeup, and under TCG a
// wakeup across virtual CPUs costs milliseconds. A larger pipe lets each
// side move more per turn (measured: 48 MiB through a pipe into the port
// took 2.9 s with 64 KiB, 1.0 s with 1 MiB).
const pipeSize = 1 << 20

// stdio is a command's standard streams: the child's ends, and ours.
type stdio struct {
	child  [3]*os.File
	in     *os.File  // we write the command's input here (nil: no input); the master with a terminal
	outs   []*ourEnd // we read the command's output here: stdout (or the terminal), stderr
	master *os.File  // the terminal's master side, with TTY
	inEnd  *ourEnd   // in, unless it is the master
	once   sync.Once
}

// ourEnd is one of the agent's ends of the command's streams, closed once
// (by the command's end, or earlier because the host asked).
type ourEnd struct {
	f    *os.File
	once sync.Once
}

func (e *ourEnd) close() { e.once.Do(func() { e.f.Close() }) }

func openStdio(req *wire.ExecRequest) (*stdio, error) {
	s := &stdio{}
	if req.TTY {
		ws := wire.WinSize{Rows: req.Rows, Cols: req.Cols}
		if ws.Rows == 0 {
			ws.Rows = defaultRows
		}
		if ws.Cols == 0 {
			ws.Cols = defaultCols
		}
		m, t, err := openPTY(ws)
		if err != nil {
			return nil, err
		}
		s.master, s.child = m, [3]*os.File{t, t, t}
		s.outs = []*ourEnd{{f: m}}
		if req.Stdin {
			s.in = m
		}
		return s, nil
	}
	var err error
	fail := func(e error) (*stdio, error) {
		s.closeChild()
		s.closeOurs()
		return nil, e
	}
	if req.Stdin {
		if s.child[0], s.in, err = os.Pipe(); err != nil {
			return fail(err)
		}
		s.inEnd = &ourEnd{f: s.in}
		setPipeSize(s.in)
	} else if s.child[0], err = os.Open(os.DevNull); err != nil {
		return fail(err)
	}
	for i := 1; i <= 2; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		s.child[i] = w
		s.outs = append(s.outs, &ourEnd{f: r})
		setPipeSize(r)
	}
	return s, nil
}

// setPipeSize raises a pipe's capacity to pipeSize, if the kernel lets it
// (a smaller pipe only costs speed).
func setPipeSize(f *os.File) {
	control(f, func(fd int) error {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, pipeSize)
		return err
	})
}

func (s *stdio) closeChild() {
	seen := map[*os.File]bool{}
	for _, f := range s.child {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}

// closeIn closes the command's input: with a pipe, the command reads end
// of file. (With a terminal, end of input is a character: see eofChar.)
func (s *stdio) closeIn() {
	if s.inEnd != nil {
		s.inEnd.close()
	}
}

// closeOutput closes the agent's end of one of the command's outputs
// (wire.OutputStdout or OutputStderr): the command's next write there
// fails with EPIPE, and SIGPIPE. With a terminal, it closes the master:
// the terminal hangs up.
func (s *stdio) closeOutput(out int) {
	if i := out - 1; i < len(s.outs) {
		s.outs[i].close()
	}
}

func (s *stdio) closeOurs() {
	s.once.Do(func() {
		s.closeIn()
		for _, e := range s.outs {
			e.close()
		}
	})
}
