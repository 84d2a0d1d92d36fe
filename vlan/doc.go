// Package vlan gives VMs virtual Ethernet LANs without root, host interfaces
// or leftovers: every VM of one user on one host that joins LAN "NAME" is on
// one Ethernet segment, and when the last of them ends nothing remains.
//
// # Mechanism
//
// Each LAN is a small learning switch in user space, speaking QEMU's stream
// netdev protocol (QEMU 7.2: -netdev stream,addr.type=unix; every Ethernet
// frame preceded by its length, 4 bytes big-endian). The alternatives fall
// short: -netdev socket/dgram multicast needs multicast routing on the host
// and lets any local user onto the LAN; socket/stream connect-listen pairs
// join only two VMs; dgram over Unix sockets works, but a datagram peer
// never tells the switch it went away, and a stream connection does.
//
// Files, in a per-user directory (DefaultDir: $XDG_RUNTIME_DIR/sonix-run-vlan,
// else $TMPDIR/sonix-run-vlan-UID; mode 0700 and owner checked):
//
//	NAME.lock              flock'ed while a joiner checks for / starts the switch,
//	                       and while an idle switch removes its files
//	NAME/control.sock      the switch's control socket (JSON lines, see protocol.go)
//	NAME/port-ID.sock      one per port: the socket one QEMU connects to
//
// # Who runs the switch
//
// The switch is a process of its own, so that it outlives whichever VM
// started it while others remain, and ends by itself. A joiner (Join),
// holding NAME.lock, connects to control.sock; if no one listens, it makes
// control.sock itself, starts the switch with it (via a short-lived
// intermediate that puts the switch in a new session and exits, so the
// switch is nobody's child and nobody's zombie), and connects again. Because
// the lock covers check, start and join, two VMs starting at once end up
// with exactly one switch, and an idle switch, which takes the same lock
// before leaving, never leaves under a joiner.
//
// The switch process is this program run again (/proc/self/exe on Linux)
// with the environment variable SONIX_RUN_VLAN_SWITCH set, which this
// package's init notices before main runs. So any binary linking the package
// can be the switch: sonix-run, and Go test binaries whose harness starts
// VMs in-process; no subcommand has to be wired up.
//
// A port is reserved by a "join" request whose connection stays open: the
// port ends when that connection ends, also when its holder is SIGKILLed, and
// QEMU (killed with sonix-run by its parent-death signal) disconnects too.
// A switch with no port for its grace period (DefaultGrace, 2 s, so that a
// VM restarting at once finds it still there) removes its files, the lock
// file last while still holding it, and exits. A switch that is itself
// killed leaves its files; the next joiner finds no listener and replaces
// them. QEMU 7.2's stream client never reconnects, so VMs already on a
// killed switch stay cut off.
//
// # Forwarding
//
// Frames go to the port that last sent from their destination address
// (learned, at most 4096 addresses, aged out after 5 minutes), or to every
// other port for group, unknown or stale destinations. Each port has a
// bounded queue (256 frames, 1 MiB): frames for a VM that stops reading are
// dropped, counted, and never slow the others down. A length prefix outside
// 14..65535 bytes ends that connection (the stream cannot be resynchronised)
// and is reported in the port's Status.
//
// Block and Unblock set a port's flag that drops every frame from it and to
// it (also those already queued), as a pulled cable would; QEMU stays
// connected.
package vlan
