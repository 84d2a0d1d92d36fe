package rundir_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/internal/hostiletest"
	"github.com/sonix-run/sonix-run/internal/owndir"
	. "github.com/sonix-run/sonix-run/rundir"
)

func TestMain(m *testing.M) { hostiletest.Main(m) }

// The attack: with no $XDG_RUNTIME_DIR, another user makes
// $TMPDIR/sonix-run-UID first, with a run directory "dev" whose owner file
// names a live process of theirs and whose socket is open to all. The base
// is ignored: Reap shows nothing and says why on one line, Find (exec,
// cp, stop, forward) finds no "dev", Create refuses the base rather than
// make its directory there, and the planted socket gets no connection.
func TestPlantedTempBaseIsIgnored(t *testing.T) {
	w := hostiletest.NewWorld(t)
	t.Setenv("TMPDIR", w.Tmp())
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	base := owndir.TempBase()
	h := w.Plant(t, filepath.Join(base, "sonix-run-dev"), "dev")

	vms, notice := Reap()
	if len(vms) != 0 {
		t.Errorf("Reap listed %+v", vms)
	}
	if strings.Contains(notice, "\n") || !strings.Contains(notice, base+", which belongs to uid 65534") || !strings.Contains(notice, "$TMPDIR") {
		t.Errorf("notice %q: want one line naming %s, its owner and what to do", notice, base)
	}
	t.Log(notice)
	_, err := Find("dev")
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), `no VM named "dev"`) || !strings.Contains(err.Error(), base) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Find(dev) = %v", err)
	}
	dir, err := Create("mine", "target", "")
	if !errors.Is(err, ErrNoPlace) || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("Create in the planted base = %q, %v", dir, err)
	} else {
		t.Log(err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 1 {
		t.Errorf("the planted base was written: %v", entries)
	}
	if conns, n := h.Received(); conns != 0 || n != 0 {
		t.Errorf("the planted socket got %d connections, %d bytes", conns, n)
	}
}
