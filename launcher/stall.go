package launcher

import (
	"bytes"
)

// stallMarkers are what Linux prints on its console when it is stuck: an
// RCU stall (a CPU that stopped getting timer interrupts, or that spins),
// a soft or hard lockup, a task blocked for minutes.
var stallMarkers = [][]byte{
	[]byte("detected stalls on CPUs"),
	[]byte("self-detected stall on CPU"),
	[]byte("soft lockup - CPU#"),
	[]byte("Watchdog detected hard LOCKUP"),
	[]byte("blocked for more than"),
}

// maxStallLine bounds the partial console line a stallWatcher keeps: the
// markers sit at the start of the kernel's lines.
const maxStallLine = 512

// stallWatcher reads the guest's console for the kernel saying it is
// stuck, and says so once. While a command owns stdout the console is not
// shown, and a run waiting on a stuck guest would otherwise say nothing
// (or, after minutes, that the agent has not answered). A guest can print
// anything: the line is quoted through messages, which keeps control
// characters off the terminal, and cut short.
type stallWatcher struct {
	msgs *messages
	line []byte
	said bool
}

func (w *stallWatcher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && !w.said {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.keep(p)
			break
		}
		w.keep(p[:i])
		w.scan(w.line)
		w.line = w.line[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *stallWatcher) keep(p []byte) {
	if room := maxStallLine - len(w.line); room > 0 {
		w.line = append(w.line, p[:min(len(p), room)]...)
	}
}

func (w *stallWatcher) scan(line []byte) {
	for _, m := range stallMarkers {
		if bytes.Contains(line, m) {
			w.said = true
			w.msgs.always("sonix-run: the guest's kernel reports a stall, the guest may not get any further: %q (the whole console: --console-log FILE, or -v)", bytes.TrimSpace(line))
			return
		}
	}
}
