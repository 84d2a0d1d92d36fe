// Package failing fails on purpose: nix/runtest runs it with lib.runTest's
// builder to check what a failed test leaves (junit.xml with the message
// and the console tail, artifacts, a failed or recorded build). It lives
// under testdata, so `go test ./...` never runs it, and it skips unless
// $SONIX_SYSTEMS names its system.
package failing_test

import (
	"os"
	"testing"

	"github.com/sonix-run/sonix-run/harness"
)

func TestDeliberateFailure(t *testing.T) {
	if os.Getenv(harness.SystemsEnv) == "" {
		t.Skip("fails on purpose; only nix/runtest runs it (with SONIX_SYSTEMS set)")
	}
	t.Run("passes", func(t *testing.T) {})
	t.Run("fails", func(t *testing.T) {
		vm := harness.StartT(t, harness.System(t, "machine", nil))
		vm.MustSucceed(t, "echo deliberate-go-marker; exit 3")
	})
}

// TestWithoutVM fails without booting anything: the cheap failure of the
// recorded-failure run.
func TestWithoutVM(t *testing.T) {
	if os.Getenv(harness.SystemsEnv) == "" {
		t.Skip("fails on purpose; only nix/runtest runs it (with SONIX_SYSTEMS set)")
	}
	t.Error("deliberate failure without a VM")
}
