package multivm_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/harness"
	"github.com/sonix-run/sonix-run/vmm"
)

// Eight tests, each with a pair of VMs on its own LAN exchanging TCP both
// ways: what `go test -parallel N` must run without collisions in names,
// run directories, LANs or ports. They share one built test system (the
// build is per process, not per test) and each runs its own pair.

var (
	pairSystemOnce sync.Once
	pairSystem     *testsystem.System
	pairSystemErr  error
	pairSystemDir  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "multivm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pairSystemDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// guestArch is the test system's architecture: the host's, as a
// derivation's systems are.
var guestArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]

// testSystem is the system every VM of this package boots when
// $SONIX_SYSTEMS gives none (see harness.System): the project's test
// system, built once per process in a directory TestMain removes; like
// testsystem.ForTest, a missing QEMU skips the test and missing inputs fail
// it.
func testSystem(t testing.TB) config.Config {
	t.Helper()
	qemu := map[string]string{"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}[guestArch]
	if _, err := exec.LookPath(qemu); err != nil {
		t.Skipf("%s is not installed", qemu)
	}
	pairSystemOnce.Do(func() {
		in, err := testsystem.FindInputs(guestArch)
		if err != nil {
			pairSystemErr = fmt.Errorf("test system inputs missing (run scripts/install-test-deps): %w", err)
			return
		}
		pairSystem, pairSystemErr = testsystem.Build(pairSystemDir, in, testsystem.Options{Salt: "pairs"})
	})
	if pairSystemErr != nil {
		t.Fatal(pairSystemErr)
	}
	// The busybox system needs little memory: 256 MiB lets many VMs boot
	// at once on a small runner. Systems given by $SONIX_SYSTEMS (NixOS)
	// keep sonix-run's default (1 GiB).
	return config.Config{Target: pairSystem.Toplevel, StoreDir: pairSystem.StoreDir, MemoryMiB: 256}
}

// pairConfig is the small guest every VM of this package is: the system
// called name (harness.System), with 1 CPU, no NAT (the LAN is the only
// network, eth0 on the test system).
func pairConfig(t testing.TB, name string) config.Config {
	t.Helper()
	cfg := harness.System(t, name, testSystem)
	cfg.Accel = vmm.AccelAuto // KVM where it works, else TCG
	cfg.Net = vmm.NetNone
	cfg.CPUs = 1 // small guests boot fastest on a busy CI runner
	// Under TCG on a loaded machine the kernel's early check that the
	// timer ticks can fail ("IO-APIC + timer doesn't work!") and panic
	// the boot; cloud images skip the check for the same reason.
	cfg.Append = append(cfg.Append, "no_timer_check")
	return cfg
}

// exchange sends a message from one VM to a listener on the other, over
// TCP with busybox nc, and checks that it arrived.
func exchange(t *testing.T, lan *harness.Network, from, to *harness.VM, port int) {
	t.Helper()
	msg := fmt.Sprintf("from-%s-to-%s", from.Name(), to.Name())
	to.MustSucceed(t, fmt.Sprintf("busybox nc -l -p %d </dev/null >/tmp/got-%d 2>&1 &", port, port))
	to.MustWaitForOpenPort(t, port)
	from.MustSucceed(t, fmt.Sprintf("echo %s | busybox nc -w 10 %s %d", msg, lan.Addr(to), port))
	to.MustWaitUntilSucceeds(t, fmt.Sprintf("grep -qx %s /tmp/got-%d", msg, port))
}

// pair boots two VMs on a LAN of the test's own and exchanges TCP both
// ways: each is a server once.
func pair(t *testing.T) {
	t.Parallel()
	lan := harness.NewNetwork(t)
	a := harness.StartT(t, lan.Attach(pairConfig(t, "server"), ""))
	b := harness.StartT(t, lan.Attach(pairConfig(t, "client"), ""))
	exchange(t, lan, a, b, 7000)
	exchange(t, lan, b, a, 7000) // the same port: the LANs and guests are apart
	b.MustSucceed(t, "busybox ping -c 1 -W 5 "+lan.Addr(a))
}

func TestPair1(t *testing.T) { pair(t) }
func TestPair2(t *testing.T) { pair(t) }
func TestPair3(t *testing.T) { pair(t) }
func TestPair4(t *testing.T) { pair(t) }
func TestPair5(t *testing.T) { pair(t) }
func TestPair6(t *testing.T) { pair(t) }
func TestPair7(t *testing.T) { pair(t) }
func TestPair8(t *testing.T) { pair(t) }
