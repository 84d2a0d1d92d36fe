// This example is the Go test a CI user copies for a client/server test:
// two VMs on a virtual LAN of their own, a web server on one, a client on
// the other, and a network partition between them.
//
// Which systems: harness.System takes "server" and "client" from
// $SONIX_SYSTEMS, which the flake's lib.runTest sets when this test runs
// as a Nix derivation (flake.nix's checks run it against NixOS systems:
// docs/ci.md); without it, both are the project's busybox test system,
// built once per process (testSystem in pairs_test.go). The commands call
// busybox's applets by name (busybox httpd, busybox wget, busybox nc), so
// that they mean the same on both; on your own systems use their tools
// (curl, systemctl).
//
// Run it with `go test ./examples/multivm/`; SONIX_ARTIFACTS=DIR keeps the
// consoles and command logs of a failed run in DIR.
package multivm_test

import (
	"testing"

	"github.com/sonix-run/sonix-run/harness"
)

func TestClientFetchesPage(t *testing.T) {
	// Harness tests may run in parallel: each VM and LAN is named after
	// its test, so nothing collides.
	t.Parallel()

	// The small guest every VM of this package is (pairConfig): 1 CPU,
	// no NAT (the LAN is the only network), no_timer_check.
	serverCfg := pairConfig(t, "server")
	clientCfg := pairConfig(t, "client")

	// A LAN for this test alone. Attach gives each VM a NIC on it and a
	// static address, which the guest sets at boot from the kernel command
	// line: the server gets 10.N.0.1/24, the client 10.N.0.2/24.
	lan := harness.NewNetwork(t)
	server := harness.StartT(t, lan.Attach(serverCfg, ""))
	client := harness.StartT(t, lan.Attach(clientCfg, ""))
	// Both boot at the same time; the first command to each waits for its
	// guest to come up.

	// The server: busybox httpd serving one page on port 80 (httpd puts
	// itself in the background, so the command returns at once).
	server.MustSucceed(t, "mkdir -p /srv && echo 'hello from the server' > /srv/index.html && busybox httpd -p 80 -h /srv")
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
