// This example is a Go test a CI user copies: it boots a system once with
// sonix-run's harness and runs three commands in it, each with its own exit
// status and output. Here the system is the project's busybox test system;
// point Target, Store and Modules at your own (e.g. Target: "./result").
package harness_test

import (
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/harness"
	"github.com/sonix-run/sonix-run/launcher"
	"github.com/sonix-run/sonix-run/vmm"
)

func TestThreeCommandsOneBoot(t *testing.T) {
	sys := testsystem.ForTest(t, "x86_64")

	vm := harness.StartT(t, launcher.Config{
		Target:     sys.Toplevel,
		StoreDir:   sys.StoreDir,
		ModulesDir: sys.ModulesDir,
		Accel:      vmm.AccelAuto,
	})
	vm.MustWaitFor(t, `^sonix-test: root-fstype=tmpfs$`)

	// 1: output and status 0.
	res := vm.MustRun(t, "uname -m")
	if res.Status != 0 || strings.TrimSpace(string(res.Stdout)) != "x86_64" {
		t.Errorf("uname -m: %d %q", res.Status, res.Stdout)
	}
	// 2: stdout and stderr apart, and a status of the command's own.
	res = vm.MustRun(t, "echo to-out; echo to-err >&2; exit 7")
	if res.Status != 7 || string(res.Stdout) != "to-out\n" || string(res.Stderr) != "to-err\n" {
		t.Errorf("got %d %q %q", res.Status, res.Stdout, res.Stderr)
	}
	// 3: the guest keeps its state between commands of one boot.
	vm.MustRun(t, "echo kept > /tmp/state")
	res = vm.MustRun(t, "cat /tmp/state && grep -c virtiofs /proc/mounts")
	if res.Status != 0 || !strings.HasPrefix(string(res.Stdout), "kept\n") {
		t.Errorf("state between commands: %d %q %q", res.Status, res.Stdout, res.Stderr)
	}
}
