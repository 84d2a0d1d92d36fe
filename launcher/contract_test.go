package launcher

import (
	"testing"

	"github.com/sonix-run/sonix-run/agent/wire"
	"github.com/sonix-run/sonix-run/vmm"
)

// The agent's port has one name: the one backends give it (vmm) is the one
// the guest agent looks for (agent/wire); vmm depends on nothing, so this
// test ties them.
func TestAgentPortName(t *testing.T) {
	if vmm.AgentPortName != wire.PortName {
		t.Errorf("vmm.AgentPortName %q, wire.PortName %q", vmm.AgentPortName, wire.PortName)
	}
}
