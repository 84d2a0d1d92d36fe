package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"
)

// consoleTailLines is how many console lines an error message quotes.
const consoleTailLines = 15

// console records the guest console line by line, with each line's time,
// for WaitFor, error messages and the artifacts.
type console struct {
	begin time.Time // the VM's start: times are relative to it

	mu      sync.Mutex
	partial []byte
	lines   []consoleLine
	next    int           // lines before this were returned by WaitFor
	changed chan struct{} // closed at a new line
	ended   bool
	tee     io.Writer
	logLine func(consoleLine)
}

type consoleLine struct {
	at   time.Duration // since begin
	text string
}

func newConsole(tee io.Writer) *console {
	return &console{begin: time.Now(), changed: make(chan struct{}), tee: tee}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tee != nil {
		c.tee.Write(p)
	}
	c.partial = append(c.partial, p...)
	consumed := 0
	at := time.Since(c.begin)
	for {
		i := bytes.IndexByte(c.partial[consumed:], '\n')
		if i < 0 {
			break
		}
		line := consoleLine{at, string(bytes.TrimRight(c.partial[consumed:consumed+i], "\r"))}
		c.lines = append(c.lines, line)
		if c.logLine != nil && !c.ended {
			c.logLine(line)
		}
		consumed += i + 1
	}
	if consumed > 0 {
		c.partial = append(c.partial[:0], c.partial[consumed:]...)
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return len(p), nil
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

// writeTo writes the whole console, each line with its time.
func (c *console) writeTo(w io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if _, err := fmt.Fprintf(w, "[%8.3fs] %s\n", l.at.Seconds(), l.text); err != nil {
			return err
		}
	}
	if len(c.partial) > 0 {
		if _, err := fmt.Fprintf(w, "[  at end ] %s [no newline]\n", c.partial); err != nil {
			return err
		}
	}
	return nil
}

func (c *console) waitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	for {
		c.mu.Lock()
		for i := c.next; i < len(c.lines); i++ {
			if line := c.lines[i].text; re.MatchString(line) {
				c.next = i + 1
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
