package launcher

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/sonix-run/sonix-run/internal/termsafe"
)

// messages is the one writer of sonix-run's own lines and of helper
// processes' output: every line is written whole, from one goroutine at a
// time, so notices from the supervisor, the console keys and QEMU's stderr
// never interleave mid-line.
type messages struct {
	mu      sync.Mutex
	w       io.Writer
	raw     bool // the terminal is in raw mode: lines need "\r\n"
	off     bool // a command owns stderr: sonix-run keeps quiet
	verbose bool // --verbose
}

func newMessages(w io.Writer, quiet, verbose bool) *messages {
	return &messages{w: w, off: quiet, verbose: verbose}
}

// detail writes a line only with --verbose.
func (m *messages) detail(format string, args ...any) {
	if m.verbose {
		m.always(format, args...)
	}
}

// notice writes one line (or a few, for help texts) of sonix-run's own.
func (m *messages) notice(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.off {
		return
	}
	m.writeLocked(fmt.Sprintf(format, args...) + "\n")
}

// always writes a line even when a command owns stderr: for what the user
// must see (a boot failure's cause, a warning about their input).
func (m *messages) always(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writeLocked(fmt.Sprintf(format, args...) + "\n")
}

func (m *messages) writeLocked(s string) {
	// Lines may quote what a guest or a helper said: no control
	// characters reach the terminal.
	s = termsafe.Text(s)
	if m.raw {
		s = strings.ReplaceAll(s, "\n", "\r\n")
		s = "\r" + s
	}
	io.WriteString(m.w, s)
}

func (m *messages) setRaw(raw bool) {
	m.mu.Lock()
	m.raw = raw
	m.mu.Unlock()
}

// Notice, Detail and Output make messages a vmm.Log for backends.
func (m *messages) Notice(format string, args ...any) { m.notice(format, args...) }
func (m *messages) Detail(format string, args ...any) { m.detail(format, args...) }

// Output is where a helper process's own messages go: through the one
// writer with --verbose, nowhere otherwise (failures quote their stderr).
func (m *messages) Output(prefix string) io.Writer {
	if !m.verbose {
		return nil // a nil interface: the helper's output is only kept for errors
	}
	return m.writer(prefix)
}

// writer returns an io.Writer for a helper's output (QEMU's or virtiofsd's
// stderr with --verbose): complete lines go out through m, a partial line
// waits for its end (or Close).
func (m *messages) writer(prefix string) *lineWriter {
	return &lineWriter{m: m, prefix: prefix}
}

type lineWriter struct {
	m       *messages
	prefix  string
	mu      sync.Mutex
	partial []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.m.notice("%s%s", l.prefix, bytes.TrimRight(l.partial[:i], "\r"))
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > 64<<10 { // a helper that never ends its line
		l.m.notice("%s%s", l.prefix, l.partial)
		l.partial = nil
	}
	return len(p), nil
}

// Close writes what is left of a last, unterminated line.
func (l *lineWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.m.notice("%s%s", l.prefix, l.partial)
		l.partial = nil
	}
	return nil
}
