package harness

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/launcher"
)

// A VM is shut down gracefully, WaitFor honours its context, and nothing
// is left behind.
func TestShutdownAndWaitFor(t *testing.T) {
	sys := testsystem.ForTest(t, "x86_64")
	runtime := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	vm, err := Start(context.Background(), launcher.Config{Target: sys.Toplevel, StoreDir: sys.StoreDir, Accel: launcher.AccelTCG})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`agent ready`)); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if _, err := vm.WaitFor(short, regexp.MustCompile(`never printed`)); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("WaitFor without a match: %v", err)
	}
	if res, err := vm.Run(ctx, "echo $((40+2))"); err != nil || string(res.Stdout) != "42\n" {
		t.Errorf("Run: %+v %v", res, err)
	}
	if err := vm.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := vm.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if _, err := vm.Run(ctx, "true"); err == nil {
		t.Error("Run after Shutdown succeeded")
	}
	if entries, _ := os.ReadDir(runtime); len(entries) > 0 {
		t.Errorf("left behind: %s", filepath.Join(runtime, entries[0].Name()))
	}
}
