//go:build linux

package agent_test

import (
	"bytes"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
)

const benchBytes = 64 << 20

// BenchmarkExecStdout measures output through Exec: the guest's head
// writes benchBytes, the host discards them. MB/s is the throughput of the
// protocol in one process over a socket pair, with real processes.
func BenchmarkExecStdout(b *testing.B) {
	p := newPair(b, guest.Options{})
	cmd := agent.Command{Argv: []string{"head", "-c", strconv.Itoa(benchBytes), "/dev/zero"}}
	b.SetBytes(benchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var n countingWriter
		st, err := p.client.Exec(testContext(b, time.Minute), cmd, agent.Stdio{Stdout: &n})
		if err != nil || st != 0 || n != benchBytes {
			b.Fatalf("status %d, err %v, %d bytes", st, err, n)
		}
	}
}

// BenchmarkExecStdin measures input through Exec: benchBytes into cat,
// whose output goes to /dev/null in the guest.
func BenchmarkExecStdin(b *testing.B) {
	p := newPair(b, guest.Options{})
	data := make([]byte, benchBytes)
	cmd := agent.Command{Shell: "exec cat >/dev/null"}
	b.SetBytes(benchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := p.client.Exec(testContext(b, time.Minute), cmd, agent.Stdio{Stdin: bytes.NewReader(data)})
		if err != nil || st != 0 {
			b.Fatalf("status %d, err %v", st, err)
		}
	}
}

// BenchmarkExecTrue measures the round trip of a command that does
// nothing.
func BenchmarkExecTrue(b *testing.B) {
	p := newPair(b, guest.Options{})
	for i := 0; i < b.N; i++ {
		st, err := p.client.Exec(testContext(b, time.Minute), agent.Command{Argv: []string{"true"}}, agent.Stdio{})
		if err != nil || st != 0 {
			b.Fatalf("status %d, err %v", st, err)
		}
	}
}

type countingWriter int

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

var _ io.Writer = (*countingWriter)(nil)
