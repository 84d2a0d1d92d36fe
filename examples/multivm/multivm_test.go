// This example is the Go test a CI user copies for a client/server test:
// two VMs on a virtual LAN of their own, a web server on one, a client on
// the other, and a network partition between them. Here both run the
// project's busybox test system; point Target, StoreDir and ModulesDir at
// your own system (e.g. Target: "./result") and use your guest's tools
// (curl, systemctl) where this one calls busybox.
//
// Run it with `go test ./examples/multivm/`; SONIX_ARTIFACTS=DIR keeps the
// consoles and command logs of a failed run in DIR.
package multivm_test

import (
	"testing"

	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/harness"
	"github.com/sonix-run/sonix-run/launcher"
	"github.com/sonix-run/sonix-run/vmm"
)

func TestClientFetchesPage(t *testing.T) {
	// Harness tests may run in parallel: each VM and LAN is named after
	// its test, so nothing collides.
	t.Parallel()

	sys := testsystem.ForTest(t, "x86_64")
	cfg := launcher.Config{
		Target:     sys.Toplevel,
		StoreDir:   sys.StoreDir,
		ModulesDir: sys.ModulesDir,
		Accel:      vmm.AccelAuto, // KVM where it works, else TCG
		Net:        vmm.NetNone,   // no NAT: the LAN is the only network, eth0
		CPUs:       1,             // small guests boot fastest on a busy CI runner
		MemoryMiB:  256,
		// Under TCG on a loaded runner the kernel's early timer check can
		// fail and panic the boot ("IO-APIC + timer doesn't work!");
		// cloud images skip it for the same reason.
		Append: []string{"no_timer_check"},
	}

	// A LAN for this test alone. Attach gives each VM a NIC on it and a
	// static address, which the guest sets at boot from the kernel command
	// line: the server gets 10.N.0.1/24, the client 10.N.0.2/24.
	lan := harness.NewNetwork(t)
	server := harness.StartT(t, lan.Attach(cfg, ""))
	client := harness.StartT(t, lan.Attach(cfg, ""))
	// Both boot at the same time; the first command to each waits for its
	// guest to come up.

	// The server: busybox httpd serving one page on port 80 (httpd puts
	// itself in the background, so the command returns at once).
	server.MustSucceed(t, "mkdir -p /srv && echo 'hello from the server' > /srv/index.html && httpd -p 80 -h /srv")
	// Wait until it listens: a client racing the server's start is the
	// classic flaky test.
	server.MustWaitForOpenPort(t, 80)

	// The client fetches the page over the LAN. timeout bounds the fetch,
	// which matters below (the test system's busybox wget crashes with its
	// own -T; with curl, use --max-time).
	fetch := "busybox timeout 5 busybox wget -q -O - http://" + lan.Addr(server) + "/"
	if page := client.MustSucceed(t, fetch); page != "hello from the server\n" {
		t.Errorf("the client got %q", page)
	}

	// A partition: cut the server's link at the switch. The fetch now
	// fails after 5 s, where it would hang without the timeout.
	lan.MustBlock(t, server)
	client.MustFail(t, fetch)

	// Heal it. The client's first attempts may still fail while ARP
	// recovers, so wait until a fetch succeeds (the wait is bounded by
	// harness.DefaultTimeout; client.WithTimeout(d) sets another bound).
	lan.MustUnblock(t, server)
	if page := client.MustWaitUntilSucceeds(t, fetch); page != "hello from the server\n" {
		t.Errorf("after the partition the client got %q", page)
	}
	// StartT registered the VMs' cleanup: they are stopped when the test
	// ends, and the LAN disappears with its last VM.
}
