package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// consoleTailLines is how many console lines an error message quotes.
const consoleTailLines = 15

// Bounds of the console kept in memory, so that a guest printing without
// end (or without a newline) cannot exhaust the test's memory. The whole
// console goes to a file as it comes (see console.spool); only its end is
// kept in memory, for WaitFor and the failure messages.
const (
	consoleKeepLines = 10000   // lines kept: the latest
	consoleKeepBytes = 4 << 20 // and at most this many bytes of them
	// consoleLineMax bounds a line: a longer one is cut into pieces of
	// this many bytes, each a line for WaitFor, the messages and the
	// test's log (the console log file keeps it whole).
	consoleLineMax = 64 << 10
)

// console records the guest console line by line, with each line's time,
// for WaitFor, error messages and the artifacts. Every byte is scanned
// once: a line is matched and logged when it ends (or when a piece of it
// is cut at consoleLineMax), never scanned again from its start.
type console struct {
	begin time.Time // the VM's start: times are relative to it

	mu      sync.Mutex
	partial []byte        // the line in progress: at most consoleLineMax bytes
	cut     bool          // pieces of the line in progress were cut off already
	lines   []consoleLine // the last lines (consoleKeepLines, consoleKeepBytes)
	first   uint64        // the number of lines[0] among all lines since the start
	bytes   int           // the text bytes in lines
	next    uint64        // lines before this were returned by WaitFor
	changed chan struct{} // closed at a new line
	ended   bool
	tee     io.Writer
	logLine func(consoleLine)

	// spool holds the whole console, in the artifact's format, as it
	// comes: a file in the user's private temporary directory, removed
	// as soon as it is made (so nothing is left behind, whatever ends the
	// process), read back through its descriptor by writeTo.
	spool    *os.File
	spoolW   *bufio.Writer
	spoolN   int64 // bytes given to spoolW
	spoolErr error // why there is no (complete) spool
}

type consoleLine struct {
	at   time.Duration // since begin
	text string
}

func newConsole(tee io.Writer) *console {
	c := &console{begin: time.Now(), changed: make(chan struct{}), tee: tee}
	c.spool, c.spoolErr = openSpool()
	if c.spool != nil {
		c.spoolW = bufio.NewWriterSize(c.spool, 64<<10)
	}
	return c
}

// openSpool makes the console's file: new (O_EXCL), mode 0600, in the
// user's private temporary directory, and unlinked at once.
func openSpool() (*os.File, error) {
	dir := owndir.TempBase()
	if err := owndir.Ensure(dir, owndir.Private); err != nil {
		return nil, fmt.Errorf("keeping the console in a file: %w", err)
	}
	f, err := os.CreateTemp(dir, "console-*.log")
	if err != nil {
		return nil, fmt.Errorf("keeping the console in a file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("keeping the console in a file: %w", err)
	}
	return f, nil
}

// release closes the console's file: writeTo has only the kept lines
// after it. StartT calls it once the artifacts are written; a console
// dropped without it has its file closed by the garbage collector.
func (c *console) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spool != nil {
		c.spool.Close()
		c.spool, c.spoolW = nil, nil
		c.spoolErr = errors.New("the console's file was closed when its test ended")
	}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tee != nil {
		c.tee.Write(p)
	}
	n := len(p)
	at := time.Since(c.begin)
	newLines := false
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			newLines = c.addToLine(p, at) || newLines
			break
		}
		c.addToLine(p[:i], at)
		c.endLine(at)
		newLines = true
		p = p[i+1:]
	}
	if newLines {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return n, nil
}

// addToLine adds seg (no newline in it) to the line in progress, cutting
// a piece off whenever the line would pass consoleLineMax; it says
// whether it did.
func (c *console) addToLine(seg []byte, at time.Duration) (cut bool) {
	for {
		room := consoleLineMax - len(c.partial)
		if len(seg) <= room {
			c.partial = append(c.partial, seg...)
			return cut
		}
		c.partial = append(c.partial, seg[:room]...)
		seg = seg[room:]
		c.cutPiece(at)
		cut = true
	}
}

// cutPiece makes a line of the full line in progress, which goes on. A
// '\r' at its end stays in progress, so that the "\r\n" of a line that
// ends right there is dropped as for any line.
func (c *console) cutPiece(at time.Duration) {
	n := len(bytes.TrimRight(c.partial, "\r"))
	if n == 0 {
		n = len(c.partial)
	}
	piece := c.partial[:n]
	if !c.cut {
		c.spoolf("[%8.3fs] ", at.Seconds())
	}
	c.spoolBytes(piece)
	c.cut = true
	c.addLine(consoleLine{at, string(piece)})
	c.partial = append(c.partial[:0], c.partial[n:]...)
}

// endLine ends the line in progress at a newline.
func (c *console) endLine(at time.Duration) {
	text := bytes.TrimRight(c.partial, "\r")
	if !c.cut {
		c.spoolf("[%8.3fs] ", at.Seconds())
	}
	c.spoolBytes(text)
	c.spoolBytes([]byte{'\n'})
	if !c.cut || len(text) > 0 {
		c.addLine(consoleLine{at, string(text)})
	}
	c.partial = c.partial[:0]
	c.cut = false
}

// addLine keeps a line, dropping the oldest beyond the bounds, and logs it.
func (c *console) addLine(l consoleLine) {
	c.lines = append(c.lines, l)
	c.bytes += len(l.text)
	for len(c.lines) > 1 && (len(c.lines) > consoleKeepLines || c.bytes > consoleKeepBytes) {
		c.bytes -= len(c.lines[0].text)
		c.lines[0] = consoleLine{} // no reference left to its text
		c.lines = c.lines[1:]
		c.first++
	}
	if c.logLine != nil && !c.ended {
		c.logLine(l)
	}
}

func (c *console) spoolf(format string, args ...any) {
	if c.spoolW == nil || c.spoolErr != nil {
		return
	}
	n, err := fmt.Fprintf(c.spoolW, format, args...)
	c.spoolN += int64(n)
	c.spoolFailed(err)
}

func (c *console) spoolBytes(p []byte) {
	if c.spoolW == nil || c.spoolErr != nil {
		return
	}
	n, err := c.spoolW.Write(p)
	c.spoolN += int64(n)
	c.spoolFailed(err)
}

func (c *console) spoolFailed(err error) {
	if err != nil {
		c.spoolErr = fmt.Errorf("writing the console's file: %w", err)
	}
}

func (c *console) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.ended = true
	close(c.changed)
	c.changed = make(chan struct{})
}

// tail returns the last n console lines, for failure messages.
func (c *console) tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		n-- // the partial line is one of the n
	}
	var out []string
	for _, l := range c.lines[max(0, len(c.lines)-n):] {
		out = append(out, l.text)
	}
	if len(c.partial) > 0 {
		out = append(out, string(c.partial)+" [no newline yet]")
	}
	return out
}

// writeTo writes the whole console, each line with its time (a line still
// in progress last, marked). Without the console's file (it could not be
// made or written), it says so and writes the lines kept in memory.
func (c *console) writeTo(w io.Writer) error {
	c.mu.Lock()
	spool, size, spoolErr := c.spool, c.spoolN, c.spoolErr
	if spoolErr == nil && c.spoolW != nil {
		if err := c.spoolW.Flush(); err != nil {
			c.spoolFailed(err)
			spoolErr = c.spoolErr
		}
	}
	var kept []consoleLine
	dropped := c.first
	if spoolErr != nil {
		kept = append(kept, c.lines...)
	}
	partial, cut := string(c.partial), c.cut
	c.mu.Unlock()

	if spoolErr == nil {
		// The file only grows: what was flushed is read without the lock,
		// so the console is not held up by a long copy.
		if _, err := io.Copy(w, io.NewSectionReader(spool, 0, size)); err != nil {
			return err
		}
	} else {
		if _, err := fmt.Fprintf(w, "[the whole console is not here (%v): these are the last %d lines, %d before them are lost]\n", spoolErr, len(kept), dropped); err != nil {
			return err
		}
		cut = false
		for _, l := range kept {
			if _, err := fmt.Fprintf(w, "[%8.3fs] %s\n", l.at.Seconds(), l.text); err != nil {
				return err
			}
		}
	}
	switch {
	case cut:
		_, err := fmt.Fprintf(w, "%s [no newline]\n", partial)
		return err
	case len(partial) > 0:
		_, err := fmt.Fprintf(w, "[  at end ] %s [no newline]\n", partial)
		return err
	}
	return nil
}

// waitFor returns the first line that matches re among those kept and not
// returned yet, or among those to come. Each line is matched once per
// call: a call that waits goes on from where it was.
func (c *console) waitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	var from uint64 // the number of the next line to look at
	for {
		c.mu.Lock()
		from = max(from, c.next, c.first)
		for ; from < c.first+uint64(len(c.lines)); from++ {
			if line := c.lines[from-c.first].text; re.MatchString(line) {
				c.next = from + 1
				c.mu.Unlock()
				return line, nil
			}
		}
		ended, changed := c.ended, c.changed
		c.mu.Unlock()
		if ended {
			return "", ErrVMEnded
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}
