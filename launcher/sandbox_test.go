package launcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Nix's build sandbox: HOME=/homeless-shelter (missing), no
// $XDG_RUNTIME_DIR or $XDG_CACHE_HOME, a fresh $TMPDIR. A run finds a place
// for its run directory and the cache, and says where the cache is in one
// line, once.
func TestSandboxShape(t *testing.T) {
	if _, err := os.Stat("/homeless-shelter"); err == nil {
		t.Skip("/homeless-shelter exists here")
	}
	cfg, b := fakeSystem(t)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/homeless-shelter")
	t.Setenv("TMPDIR", t.TempDir())
	var stderr lockedBuffer
	cfg.Stderr = &stderr
	seen := make(chan []rundir.Owner, 1)
	b.onStart = func(m *fakeMachine) {
		vms, _ := rundir.Reap()
		seen <- vms
		m.end(vmm.PoweredOff)
	}
	if err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	vms := <-seen
	if len(vms) != 1 || filepath.Dir(vms[0].Dir) != owndir.TempBase() {
		t.Errorf("running: %+v, want one in %s", vms, owndir.TempBase())
	}
	var cache []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "cach") {
			cache = append(cache, l)
		}
	}
	want := "sonix-run: caching in " + filepath.Join(owndir.TempBase(), "cache") + ": "
	if len(cache) != 1 || !strings.HasPrefix(cache[0], want) {
		t.Errorf("stderr %q: want one line starting %q", stderr.String(), want)
	}
	t.Logf("stderr: %q", stderr.String())
	if entries, _ := os.ReadDir(owndir.TempBase()); len(entries) != 1 || entries[0].Name() != "cache" {
		t.Errorf("left in %s: %v", owndir.TempBase(), entries)
	}
}
