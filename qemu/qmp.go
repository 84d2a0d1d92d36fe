package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/sonix-run/sonix-run/vmm"
)

// monitor wraps go-qemu's QMP socket monitor so that it cannot deadlock or
// hang: its event channel is always drained (go-qemu's reader blocks on an
// undrained one, and replies then never arrive), and every call has a timeout
// (go-qemu has none).
type monitor struct {
	mon *qmp.SocketMonitor

	mu       sync.Mutex
	events   []qmp.Event              // the events that say how the VM ends, in order
	ports    map[string]vmm.PortState // each virtio-serial port's guest side
	changed  chan struct{}            // closed and replaced when an event arrives
	stops    int                      // STOP events so far (the VM paused)
	closed   bool                     // the connection has ended (QEMU exited)
	drainEnd chan struct{}
}

// kept are the events the machine reads (Outcome, dumpOnPanic). Others
// are dropped: a guest can raise some without end (a port opened and
// closed in a loop, the clock set), and none may grow the host's memory.
var kept = map[string]bool{"SHUTDOWN": true, "GUEST_PANICKED": true}

// dialMonitor connects to the QMP socket at path, completes the capabilities
// handshake and starts draining events.
func dialMonitor(ctx context.Context, path string) (*monitor, error) {
	type result struct {
		mon *qmp.SocketMonitor
		err error
	}
	done := make(chan result, 1)
	go func() {
		mon, err := qmp.NewSocketMonitor("unix", path, 5*time.Second)
		if err == nil {
			if err = mon.Connect(); err != nil {
				mon.Disconnect()
			}
		}
		done <- result{mon, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		// The goroutine ends when QEMU, which the caller then kills, closes the socket.
		return nil, fmt.Errorf("QMP handshake: %w", ctx.Err())
	}
	if r.err != nil {
		return nil, fmt.Errorf("QMP handshake: %w", r.err)
	}
	events, err := r.mon.Events(context.Background())
	if err != nil {
		r.mon.Disconnect()
		return nil, err
	}
	m := &monitor{mon: r.mon, changed: make(chan struct{}), drainEnd: make(chan struct{})}
	go m.drain(events)
	return m, nil
}

func (m *monitor) drain(events <-chan qmp.Event) {
	defer close(m.drainEnd)
	for e := range events {
		m.mu.Lock()
		switch {
		case e.Event == "VSERPORT_CHANGE":
			// Only the latest state of each port is kept.
			id, _ := e.Data["id"].(string)
			open, _ := e.Data["open"].(bool)
			if m.ports == nil {
				m.ports = map[string]vmm.PortState{}
			}
			// QEMU's own clock: the event's place among the port's bytes.
			at := time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
			m.ports[id] = vmm.PortState{Open: open, At: at}
		case e.Event == "STOP":
			// Counted, not kept: a debugger (--gdb) pauses the VM at will.
			m.stops++
		case kept[e.Event] && len(m.events) < 100:
			m.events = append(m.events, e)
		}
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}
	m.mu.Lock()
	m.closed = true
	close(m.changed)
	m.mu.Unlock()
}

// snapshot returns the events so far, whether the connection has ended, and a
// channel closed at the next change.
func (m *monitor) snapshot() ([]qmp.Event, bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]qmp.Event(nil), m.events...), m.closed, m.changed
}

// port returns the guest's side of the virtio-serial port id (closed until
// QEMU says), whether the connection has ended, and a channel closed at the
// next change.
func (m *monitor) port(id string) (state vmm.PortState, closed bool, changed <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ports[id], m.closed, m.changed
}

// stopped returns how many times the VM has paused, whether the
// connection has ended, and a channel closed at the next change.
func (m *monitor) stopped() (stops int, closed bool, changed <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stops, m.closed, m.changed
}

// run executes a QMP command with a timeout.
func (m *monitor) run(ctx context.Context, command string, args any) (json.RawMessage, error) {
	cmd, err := json.Marshal(qmp.Command{Execute: command, Args: args})
	if err != nil {
		return nil, err
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := m.mon.Run(cmd)
		// go-qemu's reply aliases its reader's buffer: copy it at once.
		done <- result{append([]byte(nil), out...), err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("QMP %s: %w", command, r.err)
		}
		return r.out, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("QMP %s: %w", command, ctx.Err())
	}
}

// close disconnects; it returns once the event drain has ended.
func (m *monitor) close() {
	m.mon.Disconnect()
	<-m.drainEnd
}
