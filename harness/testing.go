package harness

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/launcher"
)

// StartT boots a VM for a test, in the spirit of vmtest's StartT: console
// lines go to t.Logf, Close is registered as a cleanup, a VM that fails to
// boot fails the test, and when the test fails the command line to
// reproduce the run is logged.
func StartT(t testing.TB, cfg launcher.Config) *VM {
	t.Helper()
	start := time.Now()
	c := newConsole(cfg.Stdout)
	c.logLine = func(line string) { t.Logf("[%6.2fs] console: %s", time.Since(start).Seconds(), line) }
	cfg.Stdout = c
	vm, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting the VM: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("to reproduce the VM: %s", vm.Command())
		}
		if err := vm.Close(); err != nil {
			t.Errorf("closing the VM: %v", err)
		}
	})
	return vm
}

// MustRun runs cmd with DefaultTimeout and fails the test if the command
// could not be run (a non-zero status is returned, not a failure).
func (vm *VM) MustRun(t testing.TB, cmd string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	res, err := vm.Run(ctx, cmd)
	if err != nil {
		t.Fatalf("running %q: %v", cmd, err)
	}
	return res
}

// MustWaitFor waits, with DefaultTimeout, for a console line matching
// pattern, and fails the test if none comes.
func (vm *VM) MustWaitFor(t testing.TB, pattern string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	line, err := vm.WaitFor(ctx, regexp.MustCompile(pattern))
	if err != nil {
		t.Fatal(err)
	}
	return line
}
