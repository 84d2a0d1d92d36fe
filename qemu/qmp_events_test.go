package qemu

import (
	"testing"

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
		events <- qmp.Event{Event: "VSERPORT_CHANGE", Data: map[string]any{"id": agentPortID, "open": i%2 == 0}}
		events <- qmp.Event{Event: "RTC_CHANGE", Data: map[string]any{"offset": i}}
	}
	events <- qmp.Event{Event: "VSERPORT_CHANGE", Data: map[string]any{"id": "other", "open": true}}
	events <- qmp.Event{Event: "SHUTDOWN", Data: map[string]any{"reason": "guest-shutdown"}}
	close(events)
	<-m.drainEnd
	open, closed, _ := m.port(agentPortID)
	if open || !closed {
		t.Errorf("agent port open=%v (want the latest, false), closed=%v", open, closed)
	}
	if o, _, _ := m.port("other"); !o {
		t.Error("another port's state was lost")
	}
	evs, _, _ := m.snapshot()
	if len(evs) != 1 || evs[0].Event != "SHUTDOWN" {
		t.Errorf("kept %d events, want only SHUTDOWN", len(evs))
	}
}
