package harness

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Bounds of a VM's command log, so that a test polling for minutes or a
// command printing gigabytes cannot exhaust the test's memory.
const (
	logStreamMax  = 64 << 10 // bytes kept of each stream of each command: its end
	logMaxEntries = 10000    // entries kept: the latest
)

// commandLog records what the harness did to a VM, for the artifacts of a
// failed test.
type commandLog struct {
	begin time.Time

	mu      sync.Mutex
	entries []*logEntry
	dropped int // oldest entries dropped beyond logMaxEntries
}

type logEntry struct {
	log      *commandLog
	kind     string // exec, copy, forward, block, unblock
	what     string
	start    time.Duration // since the VM's start
	took     time.Duration
	out, err tailBuffer
	status   int
	failure  error
	done     bool
}

func newCommandLog(begin time.Time) *commandLog { return &commandLog{begin: begin} }

// start logs the beginning of an operation; finish its end.
func (l *commandLog) start(kind, what string) *logEntry {
	e := &logEntry{log: l, kind: kind, what: what, start: time.Since(l.begin)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= logMaxEntries {
		n := len(l.entries) - logMaxEntries + 1
		l.entries = append(l.entries[:0], l.entries[n:]...)
		l.dropped += n
	}
	l.entries = append(l.entries, e)
	return e
}

func (e *logEntry) finish(status int, err error) {
	e.log.mu.Lock()
	defer e.log.mu.Unlock()
	e.took = time.Since(e.log.begin) - e.start
	e.status, e.failure, e.done = status, err, true
}

// stdout and stderr return writers that record a stream and pass it on to
// w (nil: nowhere).
func (e *logEntry) stdout(w io.Writer) io.Writer { return &logTee{e, &e.out, w} }
func (e *logEntry) stderr(w io.Writer) io.Writer { return &logTee{e, &e.err, w} }

type logTee struct {
	e   *logEntry
	buf *tailBuffer
	w   io.Writer
}

func (t *logTee) Write(p []byte) (int, error) {
	t.e.log.mu.Lock()
	t.buf.write(p)
	t.e.log.mu.Unlock()
	if t.w == nil {
		return len(p), nil
	}
	return t.w.Write(p)
}

// tailBuffer keeps the last logStreamMax bytes written to it.
type tailBuffer struct {
	b       []byte
	dropped int64
}

func (t *tailBuffer) write(p []byte) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*logStreamMax { // trim now and then, not at every write
		t.trim()
	}
}

func (t *tailBuffer) trim() {
	if cut := len(t.b) - logStreamMax; cut > 0 {
		t.dropped += int64(cut)
		t.b = append(t.b[:0], t.b[cut:]...)
	}
}

// writeTo writes the log as text.
func (l *commandLog) writeTo(w io.Writer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	if l.dropped > 0 {
		fmt.Fprintf(&b, "[%d earlier entries dropped: the log keeps the last %d]\n", l.dropped, logMaxEntries)
	}
	if len(l.entries) == 0 {
		b.WriteString("(nothing was run)\n")
	}
	for _, e := range l.entries {
		e.out.trim()
		e.err.trim()
		fmt.Fprintf(&b, "[%8.3fs] %s %s\n", e.start.Seconds(), e.kind, e.what)
		switch {
		case !e.done:
			b.WriteString("           still running when the log was written\n")
		case e.failure != nil:
			fmt.Fprintf(&b, "           error after %.3fs: %v\n", e.took.Seconds(), e.failure)
		case e.kind == "exec":
			fmt.Fprintf(&b, "           exit status %d after %.3fs\n", e.status, e.took.Seconds())
		default:
			fmt.Fprintf(&b, "           done after %.3fs\n", e.took.Seconds())
		}
		if e.kind == "exec" {
			writeStream(&b, "stdout", &e.out)
			writeStream(&b, "stderr", &e.err)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func writeStream(b *bytes.Buffer, name string, t *tailBuffer) {
	if len(t.b) == 0 && t.dropped == 0 {
		fmt.Fprintf(b, "           %s: (empty)\n", name)
		return
	}
	fmt.Fprintf(b, "           %s:", name)
	if t.dropped > 0 {
		fmt.Fprintf(b, " [first %d bytes dropped]", t.dropped)
	}
	b.WriteString("\n")
	text := strings.TrimSuffix(string(t.b), "\n")
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(b, "             | %s\n", line)
	}
	if !bytes.HasSuffix(t.b, []byte("\n")) {
		fmt.Fprintf(b, "             [no newline at the end]\n")
	}
}
