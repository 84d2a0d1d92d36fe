package vz

import (
	"io"
	"time"
)

// The framework writes the guest's console output into a pipe of ours,
// through a descriptor handed over with NSFileHandle. Its VM runs in a
// separate XPC service process, which may keep a copy of that write end
// after the VM has stopped (nothing in Apple's documentation or v3.7.1 says
// it is closed), so end-of-file on the pipe cannot be what ends a run:
// after the stopped state the copy drains what is in flight, and is cut once
// the pipe has been quiet for consoleQuiet, or after consoleDrainWait at
// most.
var (
	consoleQuiet     = 250 * time.Millisecond
	consoleDrainWait = 2 * time.Second
	// consoleCutWait bounds the wait for the copy after the cut, which ends
	// its read or write at once where the file takes deadlines.
	consoleCutWait = time.Second
)

// deadlineReader is the console pipe's read end: an *os.File from os.Pipe,
// whose reads a deadline can end.
type deadlineReader interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// consoleCopy copies the guest's console output from the pipe to the
// launcher's console, through the ending watcher.
type consoleCopy struct {
	src  deadlineReader
	dst  io.Writer
	ours io.Closer // our copy of the pipe's write end
	// activity gets a token after each read that returned data.
	activity chan struct{}
	done     chan struct{}
}

// startConsoleCopy starts the copy from src to dst. ours is this process's
// copy of the pipe's write end, which end closes.
func startConsoleCopy(dst io.Writer, src deadlineReader, ours io.Closer, w *endingWatcher) *consoleCopy {
	c := &consoleCopy{src: src, dst: dst, ours: ours, activity: make(chan struct{}, 1), done: make(chan struct{})}
	go func() { // owned: end waits for it, and its deadline ends its read
		defer close(c.done)
		copyConsole(dst, activityReader{src, c.activity}, w)
	}()
	return c
}

// end ends the copy once the VM has ended: it drains what the framework
// still delivers, then cuts the pipe. It returns within consoleDrainWait
// plus consoleCutWait; it reports false if the copy goroutine is still
// blocked then, which needs a destination that blocks and takes no
// deadline.
func (c *consoleCopy) end() bool {
	c.ours.Close()
	quiet := time.NewTimer(consoleQuiet)
	defer quiet.Stop()
	limit := time.NewTimer(consoleDrainWait)
	defer limit.Stop()
	for cut := false; !cut; {
		select {
		case <-c.done:
			return true
		case <-c.activity:
			quiet.Reset(consoleQuiet)
		case <-quiet.C:
			cut = true
		case <-limit.C:
			cut = true
		}
	}
	// The pipe's read end is in Go's poller (os.Pipe), so a deadline in the
	// past ends a blocked read at once; a destination that takes deadlines
	// (a pipe of the launcher's) is unblocked the same way.
	now := time.Now()
	c.src.SetReadDeadline(now)
	if d, ok := c.dst.(interface{ SetWriteDeadline(time.Time) error }); ok {
		d.SetWriteDeadline(now)
	}
	t := time.NewTimer(consoleCutWait)
	defer t.Stop()
	select {
	case <-c.done:
		return true
	case <-t.C:
		return false
	}
}

// activityReader signals each read that returned data on activity, without
// blocking.
type activityReader struct {
	r        io.Reader
	activity chan<- struct{}
}

func (a activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		select {
		case a.activity <- struct{}{}:
		default:
		}
	}
	return n, err
}
