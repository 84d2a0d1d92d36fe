package qemu

import (
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// A guest that opens and closes a port, or sets its clock, without end
// cannot grow the host's memory through QEMU's events: only the latest
// state of each port is kept, and only the events that say how the VM
// ends.
func TestMonitorKeepsWhatMatters(t *testing.T) {
	m := &monitor{changed: make(chan struct{}), drainEnd: make(chan struct{})}
	events := make(chan qmp.Event)
	go m.drain(events)
	for i := range 100000 {
		e := qmp.Event{Event: "VSERPORT_CHANGE", Data: map[string]any{"id": agentPortID, "open": i%2 == 0}}
		e.Timestamp.Seconds, e.Timestamp.Microseconds = 1700000000+int64(i), 250000
		events <- e
		events <- qmp.Event{Event: "RTC_CHANGE", Data: map[string]any{"offset": i}}
	}
	events <- qmp.Event{Event: "VSERPORT_CHANGE", Data: map[string]any{"id": "other", "open": true}}
	events <- qmp.Event{Event: "SHUTDOWN", Data: map[string]any{"reason": "guest-shutdown"}}
	close(events)
	<-m.drainEnd
	st, closed, _ := m.port(agentPortID)
	// The latest state, at QEMU's time of it: the link orders the port's
	// events against its bytes by it.
	if want := time.Unix(1700000000+99999, 250000000); st.Open || !st.At.Equal(want) || !closed {
		t.Errorf("agent port %+v, closed=%v; want the latest: closed at %v", st, closed, want)
	}
	if o, _, _ := m.port("other"); !o.Open {
		t.Error("another port's state was lost")
	}
	evs, _, _ := m.snapshot()
	if len(evs) != 1 || evs[0].Event != "SHUTDOWN" {
		t.Errorf("kept %d events, want only SHUTDOWN", len(evs))
	}
}
