//go:build linux

package guest

import (
	"errors"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// ptyHangupWait bounds how long, after a command on a terminal has exited,
// its output waits for the terminal's hangup (all its holders closed it).
// Terminal output can still be in the kernel's buffers when the process
// has exited; the hangup comes once it has all been read. A process left
// in the background that keeps the terminal open would hold it forever.
const ptyHangupWait = 2 * time.Second

// pumpBuffers keeps the output pumps' buffers from one command to the
// next: allocating (and zeroing) them for every command costs a short
// command a good part of its time under TCG.
var pumpBuffers = sync.Pool{New: func() any {
	b := make([]byte, wire.HeaderSize+wire.MaxData)
	return &b
}}

// pump sends what the command writes to e as frames of type t until end
// of file, or, once stopOutput set a deadline, until e holds nothing more.
// It reads into a buffer that leaves room for the frame's header, so that
// each frame goes out in one write without a copy.
func (x *execution) pump(e *ourEnd, t wire.FrameType) {
	bp := pumpBuffers.Get().(*[]byte)
	defer pumpBuffers.Put(bp)
	buf := *bp
	for {
		n, err := e.f.Read(buf[wire.HeaderSize:])
		if n > 0 {
			if x.op.w.WriteData(t, buf[:wire.HeaderSize+n]) != nil {
				return
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			x.drain(e.f, t, buf)
			return
		default:
			// io.EOF for a pipe; EIO for a terminal whose every holder has
			// closed it; os.ErrClosed once the host closed this output.
			return
		}
	}
}

// drain sends what f holds now, without waiting for more.
func (x *execution) drain(f *os.File, t wire.FrameType, buf []byte) {
	f.SetReadDeadline(time.Time{})
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		var rerr error
		// Returning true makes this one non-blocking read attempt.
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf[wire.HeaderSize:])
			return true
		}); err != nil {
			return
		}
		if rerr == unix.EINTR {
			continue
		}
		if n <= 0 || rerr != nil {
			return
		}
		if x.op.w.WriteData(t, buf[:wire.HeaderSize+n]) != nil {
			return
		}
	}
}

// stopOutput makes the output pumps stop: at once when the host is gone
// (their frames could not be sent), else after what is buffered.
func (x *execution) stopOutput(hostGone bool) {
	if hostGone {
		x.op.conn.SetWriteDeadline(time.Now())
	}
	for _, e := range x.io.outs {
		e.f.SetReadDeadline(time.Now())
	}
}

// finishOutput waits for the output pumps once the command has exited.
func (x *execution) finishOutput(outputs *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		outputs.Wait()
		close(done)
	}()
	if x.io.master != nil {
		t := time.NewTimer(ptyHangupWait)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
	x.stopOutput(false)
	<-done
}
