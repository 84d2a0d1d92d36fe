package vz

import (
	"bytes"
	"io"
	"sync"

	"github.com/sonix-run/sonix-run/vmm"
)

// Virtualization.framework tells a host only that the guest stopped the
// machine: a poweroff, a reboot (the framework does not reset a Linux guest)
// and a panic under panic=-1 all end in the "stopped" state, and there is no
// pvpanic device. The kernel's last console lines tell them apart, so the
// console is read on its way to the launcher for these lines, printed at
// KERN_EMERG (shown even under "quiet") by kernel/reboot.c and
// kernel/panic.c. A guest that prints such a line itself can mislead this;
// without any of them a guest-made stop counts as a poweroff.
var endingMarks = []struct {
	text   []byte
	ending vmm.Ending
}{
	{[]byte("Kernel panic - not syncing"), vmm.Panicked},
	{[]byte("reboot: Restarting system"), vmm.Reset},
	{[]byte("reboot: Power down"), vmm.PoweredOff},
	{[]byte("reboot: System halted"), vmm.PoweredOff},
}

// maxLine bounds the partial line kept between writes; the marks are at
// the start of short kernel lines.
const maxLine = 1024

// endingWatcher scans console output for the kernel's last words. A panic
// sticks; otherwise the latest reboot or poweroff line counts.
type endingWatcher struct {
	mu     sync.Mutex
	line   []byte
	ending vmm.Ending // 0 until a mark is seen
}

func (w *endingWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			w.line = append(w.line, rest...)
			if len(w.line) > maxLine {
				w.line = append(w.line[:0], w.line[len(w.line)-maxLine:]...)
			}
			break
		}
		w.line = append(w.line, rest[:i]...)
		w.scan(w.line)
		w.line = w.line[:0]
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (w *endingWatcher) scan(line []byte) {
	for _, m := range endingMarks {
		if bytes.Contains(line, m.text) {
			if w.ending != vmm.Panicked {
				w.ending = m.ending
			}
			return
		}
	}
}

// Ending is how the console says the guest ended, 0 when it did not say.
// It also considers an unfinished last line.
func (w *endingWatcher) Ending() vmm.Ending {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.line) > 0 {
		w.scan(w.line)
		w.line = w.line[:0]
	}
	return w.ending
}

// copyConsole copies the guest's console output from src to dst, through
// w, until src ends. A failing dst does not stop the copy, or the guest
// would block writing its console; it still reaches w.
func copyConsole(dst io.Writer, src io.Reader, w *endingWatcher) {
	buf := make([]byte, 32<<10)
	dstOK := true
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			if dstOK {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					dstOK = false
				}
			}
		}
		if err != nil {
			return
		}
	}
}
