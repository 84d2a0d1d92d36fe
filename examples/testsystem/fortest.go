package testsystem

import (
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// ForTest builds a fresh test system for arch in a test's temporary
// directory. It skips the test, saying why, only when QEMU for arch is not
// installed; missing inputs fail it (run scripts/install-test-deps).
func ForTest(t testing.TB, arch string) *System {
	t.Helper()
	qemu := map[string]string{"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}[arch]
	if _, err := exec.LookPath(qemu); err != nil {
		t.Skipf("%s is not installed", qemu)
	}
	in, err := FindInputs(arch)
	if err != nil {
		t.Fatalf("test system inputs missing (run scripts/install-test-deps): %v", err)
	}
	sys, err := Build(t.TempDir(), in, Options{Salt: strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		t.Fatal(err)
	}
	return sys
}
