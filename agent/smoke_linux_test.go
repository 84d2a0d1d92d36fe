//go:build linux

package agent_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
)

func TestSmoke(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{AgentVersion: "test"})
	ctx := testContext(t, 30*time.Second)
	h, err := p.client.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", h)
	var out, errb bytes.Buffer
	st, err := p.client.Exec(ctx, agent.Command{Shell: "echo hi; echo err >&2; exit 3"}, agent.Stdio{Stdout: &out, Stderr: &errb})
	if err != nil || st != 3 || out.String() != "hi\n" || errb.String() != "err\n" {
		t.Fatalf("status %d err %v out %q err %q", st, err, out.String(), errb.String())
	}
}
