//go:build linux

package guest

import "testing"

func TestPowerOffMethod(t *testing.T) {
	for _, tc := range []struct {
		pid     int
		systemd bool
		want    string
	}{
		{1, false, viaReboot},     // the agent is init
		{1, true, viaReboot},      // the agent is init (systemd's marker is stale)
		{500, true, viaSystemctl}, // a systemd service
		{42, false, viaReboot},    // a busybox stage 2's child
	} {
		if got := powerOffMethod(tc.pid, tc.systemd); got != tc.want {
			t.Errorf("pid %d, systemd %v: %s, want %s", tc.pid, tc.systemd, got, tc.want)
		}
	}
}

func TestHello(t *testing.T) {
	h := hello("v1")
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if h.KernelRelease == "" || h.Arch == "" || h.AgentVersion != "v1" {
		t.Errorf("%+v", h)
	}
}
