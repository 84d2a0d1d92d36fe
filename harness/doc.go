// Package harness is sonix-run for Go tests: boot VMs, put them on virtual
// LANs, wait for what the guest does, run commands with their exit status,
// stdout and stderr, copy files in and out, and leak nothing. Its words are
// those of the NixOS test driver, so a test ports line by line:
//
//	lan := harness.NewNetwork(t)
//	server := harness.StartT(t, lan.Attach(cfg, ""))   // 10.N.0.1/24
//	client := harness.StartT(t, lan.Attach(cfg, ""))   // 10.N.0.2/24
//	server.MustSucceed(t, "httpd -h /srv")
//	server.MustWaitForOpenPort(t, 80)
//	page := client.MustSucceed(t, "wget -qO- http://"+lan.Addr(server)+"/")
//	lan.MustBlock(t, server)
//	client.MustFail(t, "timeout 5 wget -qO- http://"+lan.Addr(server)+"/")
//
// Commands go through the guest's agent (docs/protocol.md), which the test
// system and sonix-run's NixOS module run.
//
// # The vocabulary
//
// Every call comes twice: as a method taking a context, which bounds the
// call and returns an error, and as a Must method taking a testing.TB,
// which bounds the call with DefaultTimeout (or vm.WithTimeout(d)) and
// fails the test with the error. Errors are *Error values: their message
// names the VM and the call, and holds the command's status and output and
// the last lines of the console.
//
//	Run / Exec / Stream          run a command; any status is a result, not an error
//	Succeed / MustSucceed        run a shell command that must exit 0; stdout returned
//	Fail / MustFail              run a shell command that must exit non-zero; stdout returned
//	WaitUntilSucceeds / Must...  retry a shell command until it exits 0
//	WaitUntilFails / Must...     retry a shell command until it exits non-zero
//	WaitForFile / Must...        until a guest path exists
//	WaitForOpenPort / Must...    until a TCP socket listens on the port in the guest
//	WaitForUnit / Must...        until a systemd unit is active (systemd guests)
//	WaitForConsole / Must...     until a console line matches (WaitFor is the same)
//	CopyTo / CopyFrom / Must...  copy files and directories, modes kept
//	ForwardPort / Must...        forward a host port to the guest while it runs
//
// The WaitUntil and WaitFor calls poll: they run their probe, and while it
// does not hold, wait 50 ms before the next attempt, doubling the wait up
// to 1 s. WaitForConsole does not poll; it wakes at each new console line.
//
// # Bounds
//
// Nothing a guest prints can make the test eat the host's memory. Run and
// Exec (and every call built on them) keep at most DefaultOutputLimit
// (16 MiB) of each of a command's stdout and stderr: a command that prints
// more is ended, and the call fails with an *OutputLimitError that says
// how much came, the command's status and how to raise the limit
// (vm.WithOutputLimit(n)); Stream passes the output to writers of the
// caller's, unbounded. The console is kept in memory as its last 10000
// lines, at most 4 MiB of them: WaitFor matches those and the lines that
// come while it waits, each line once, as it ends. A line longer than
// 64 KiB is cut into pieces of 64 KiB, each a line for WaitFor, the
// failure messages and the test's log (a pattern across a cut does not
// match). The whole console goes, as it comes, to a private file (in
// $TMPDIR/sonix-run-UID, removed from the directory at once), from which a
// failed test's NAME.console.log is written: every byte, long lines
// whole.
//
// # Networks
//
// A Network is a virtual LAN (sonix-run --vlan) private to one test: its
// name is unique per test and process, so parallel tests never share one.
// Attach gives a VM's configuration a NIC on it and a static address, which
// the guest sets from the kernel command line (sonix.ip=ADDR/PREFIX,MAC:
// the test system reads it, and so does the NixOS module with
// sonix-run.staticAddress.enable).
// Block and Unblock cut and restore one VM's link, as a pulled cable would.
//
// # Failure artifacts
//
// When a test that started VMs with StartT fails, the harness writes, for
// each of its VMs, into one directory per test:
//
//	NAME.console.log    the console, each line with its time since the boot
//	NAME.commands.log   every command run, copy, forward, block and unblock,
//	                    with its status and output (at most 64 KiB of each
//	                    stream per command, its end kept)
//	NAME.reproduce.sh   the sonix-run command line that boots the same VM
//
// The directory is $SONIX_ARTIFACTS/<test name> (the test name with '/'
// turned into '.'), or, when SONIX_ARTIFACTS is unset,
// $TMPDIR/sonix-run-UID/artifacts/<test name>-<time>-<pid>, private to the
// user: not under t.TempDir, which the testing package removes when the
// test ends, failed or not. A directory that exists already gets a suffix
// (.2, .3, ...), so reruns and two packages with equal test names never mix
// their files. The test's log names the directory. Set SONIX_ARTIFACTS in
// CI and upload it.
//
// No other user can read the artifacts or make the harness write anywhere
// else: the directories are made with mode 0700, the files are new
// (O_EXCL|O_NOFOLLOW, never written through a link or over a file; a name
// that is taken gets the next of NAME.2.console.log, ...) with mode 0600,
// 0700 for the script. $SONIX_ARTIFACTS is made if missing; one that
// belongs to another user or that others may write is refused (the test's
// log says why), and so is a $TMPDIR/sonix-run-UID that is not the user's
// own private directory.
//
// # Parallel tests
//
// Tests that use the harness may call t.Parallel() and run under go test
// -parallel N: StartT names every VM after its test, the process and a
// counter (unless Config.Name is set), so VM names, run directories, LANs
// and MAC addresses never collide; ForwardPort(ctx, 0, guestPort) picks a
// free host port. Fixed ports in Config.Forwards or Config.GDBPort are the
// caller's to keep apart.
//
// How many VMs fit: under TCG (no KVM) every guest vCPU is a host thread
// that runs flat out while the guest boots, so boots share the cores.
// Measured on a 2-core machine (shared with other work, so these are upper
// bounds) with the busybox test system, 1 vCPU and 256 MiB per VM, TCG: VMs
// booting at once, and the time until each answered its first command:
//
//	1 VM: 7.5 s    2 VMs: 7 s    4 VMs: 15 s    8 VMs: 34 s
//
// One boot per core at a time is the throughput: more VMs than cores makes
// every boot slower (and more exposed to its timeouts), not the batch
// faster. The 9 two-VM tests of examples/multivm took 129 s at -parallel 2
// and 144 s at -parallel 4 on that machine. So on a 2-core runner, tests of
// two VMs run best at -parallel 1 or 2; go test's default, GOMAXPROCS, is
// 2 there. Each VM also holds its Config.MemoryMiB as the guest touches it,
// plus QEMU's and virtiofsd's own memory. On a loaded TCG host the guest
// kernel's early timer check can fail and panic the boot ("IO-APIC + timer
// doesn't work!"): the kernel parameter no_timer_check (Config.Append)
// skips it, as cloud images do.
//
// # Keeping a VM
//
// SONIX_KEEP=1 go test ... keeps the VMs of a failed test running: the
// test's log says how to reach each (`sonix-run shell NAME`), and the test
// waits until each is stopped (`sonix-run stop NAME`).
package harness
