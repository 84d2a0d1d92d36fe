// This example is a Go test a CI user copies: it boots a system once with
// sonix-run's harness and runs three commands in it, each with its own exit
// status and output.
//
// Which system: harness.System(t, "machine", ...) takes the system called
// "machine" from $SONIX_SYSTEMS, which the flake's lib.runTest sets when
// this test runs as a Nix derivation (flake.nix's checks run it against a
// NixOS system: docs/ci.md); without it, `go test` here boots the
// project's busybox test system, built for the test (testSystem below).
// Point the fallback at your own system, e.g.
// config.Config{Target: "./result"}, or set SONIX_SYSTEMS.
package harness_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/harness"
	"github.com/sonix-run/sonix-run/vmm"
)

// guestArch is what uname -m says in a guest of the host's architecture,
// which is what both the test system built here and a derivation's system
// are.
var guestArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]

// testSystem is the system this test boots when it is given none: the
// project's test system, built in the test's temporary directory.
func testSystem(t testing.TB) config.Config {
	sys := testsystem.ForTest(t, guestArch)
	return config.Config{Target: sys.Toplevel, StoreDir: sys.StoreDir, ModulesDir: sys.ModulesDir}
}

func TestThreeCommandsOneBoot(t *testing.T) {
	cfg := harness.System(t, "machine", testSystem)
	cfg.Accel = vmm.AccelAuto // KVM where it works, else TCG

	vm := harness.StartT(t, cfg)
	// The first command waits until the guest's agent answers; the root is
	// the tmpfs sonix-run boots every system with.
	vm.MustSucceed(t, "grep -q '^[^ ]* / tmpfs ' /proc/mounts")

	// 1: output and status 0.
	res := vm.MustRun(t, "uname -m")
	if res.Status != 0 || strings.TrimSpace(string(res.Stdout)) != guestArch {
		t.Errorf("uname -m: %d %q, want %s", res.Status, res.Stdout, guestArch)
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
