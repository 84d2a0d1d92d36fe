package testsystem

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// The test system runs sonix-run's own guest agent (cmd/sonix-run-agent),
// cross-compiled for the guest from this checkout: the same program the
// NixOS module runs.
var (
	agentMu    sync.Mutex
	agentBuilt = map[string][]byte{} // by guest arch: one build per process
)

// repoRoot is the checkout this package was compiled from.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testsystem: cannot find the source checkout")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "cmd", "sonix-run-agent")); err != nil {
		return "", fmt.Errorf("testsystem: the guest agent's source is not at %s: %w", root, err)
	}
	return root, nil
}

// agentBinary returns the guest agent built for arch (static, no cgo).
func agentBinary(arch string) ([]byte, error) {
	agentMu.Lock()
	defer agentMu.Unlock()
	if b, ok := agentBuilt[arch]; ok {
		return b, nil
	}
	if p := os.Getenv("SONIX_TEST_AGENT_" + arch); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("testsystem: $SONIX_TEST_AGENT_%s: %w", arch, err)
		}
		agentBuilt[arch] = b
		return b, nil
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "sonix-test-agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "sonix-run-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/sonix-run-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arches[arch].goarch, "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testsystem: building the guest agent for %s: %v\n%s", arch, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	agentBuilt[arch] = b
	return b, nil
}
