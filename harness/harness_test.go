package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vlan"
	"github.com/sonix-run/sonix-run/vmm"
)

// A VM is shut down gracefully, WaitFor honours its context, and nothing
// is left behind.
func TestShutdownAndWaitFor(t *testing.T) {
	sys := testsystem.ForTest(t, "x86_64")
	runtime := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	vm, err := Start(context.Background(), config.Config{Target: sys.Toplevel, StoreDir: sys.StoreDir, Accel: vmm.AccelTCG})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`starting the agent`)); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if _, err := vm.WaitFor(short, regexp.MustCompile(`never printed`)); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("WaitFor without a match: %v", err)
	}
	if res, err := vm.Run(ctx, "echo $((40+2))"); err != nil || string(res.Stdout) != "42\n" {
		t.Errorf("Run: %+v %v", res, err)
	}
	if err := vm.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := vm.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if _, err := vm.Run(ctx, "true"); err == nil {
		t.Error("Run after Shutdown succeeded")
	}
	if entries, _ := os.ReadDir(runtime); len(entries) > 0 {
		t.Errorf("left behind: %s", filepath.Join(runtime, entries[0].Name()))
	}
}

// smallConfig boots the busybox test system as a small TCG guest: one
// vCPU, 256 MiB, which is what it needs.
func smallConfig(t *testing.T) config.Config {
	sys := testsystem.ForTest(t, "x86_64")
	// no_timer_check: on a loaded machine the kernel's early timer check
	// can fail under TCG and panic the boot.
	return config.Config{Target: sys.Toplevel, StoreDir: sys.StoreDir, Accel: vmm.AccelTCG, CPUs: 1, MemoryMiB: 256,
		Append: []string{"no_timer_check"}}
}

// wantMessage checks that an error message (or a test's failure) says
// each of wants.
func wantMessage(t *testing.T, what, msg string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: the message lacks %q:\n%s", what, w, msg)
		}
	}
}

// Every call of the vocabulary on one booted VM: what it returns, and its
// timeout path and message. Waits whose condition comes true later are
// made to wait by a background job in the guest.
func TestVocabulary(t *testing.T) {
	t.Parallel()
	vm := StartT(t, smallConfig(t))
	short := vm.WithTimeout(time.Second) // for the timeout paths
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	consoleSays := "sonix-run-agent: " // the agent logs its session on the console

	// Succeed and Fail.
	if out := vm.MustSucceed(t, "echo hi; echo err >&2"); out != "hi\n" {
		t.Errorf("MustSucceed: %q", out)
	}
	out, err := vm.Succeed(ctx, "echo partial; echo why >&2; exit 3")
	var he *Error
	if !errors.As(err, &he) || he.Result == nil || he.Result.Status != 3 || out != "partial\n" {
		t.Errorf("Succeed of exit 3: %q %#v", out, err)
	}
	wantMessage(t, "Succeed", fmt.Sprint(err), "VM "+vm.Name()+`: succeed "echo partial; echo why >&2; exit 3": exit status 3, want 0`,
		"stdout:\n    | partial", "stderr:\n    | why", "console lines:", consoleSays)
	if out := vm.MustFail(t, "echo no; exit 1"); out != "no\n" {
		t.Errorf("MustFail: %q", out)
	}
	_, err = vm.Fail(ctx, "true")
	wantMessage(t, "Fail", fmt.Sprint(err), `fail "true": exit status 0, want a failure`, consoleSays)
	wantMessage(t, "MustSucceed", fails(t, func(tb testing.TB) { vm.MustSucceed(tb, "exit 4") }), "exit status 4, want 0", consoleSays)
	wantMessage(t, "MustFail", fails(t, func(tb testing.TB) { vm.MustFail(tb, "exit 0") }), "exit status 0, want a failure")

	// Output past the VM's limit ends the command, and the error says so.
	res, err := vm.WithOutputLimit(1000).Run(ctx, "yes")
	wantMessage(t, "Run past the output limit", fmt.Sprint(err), `running "yes": its stdout passed the output limit of 1000 bytes: it printed at least `,
		"so the harness ended it (exit status 143)", "vm.WithOutputLimit(n)")
	if len(res.Stdout) != 1000 {
		t.Errorf("Run past the output limit kept %d bytes, want 1000", len(res.Stdout))
	}

	// A command cut short by its context: the error says so, and the
	// guest's command is ended.
	began := time.Now()
	msg := fails(t, func(tb testing.TB) { short.MustSucceed(tb, "echo started; sleep 60") })
	wantMessage(t, "MustSucceed past its timeout", msg, "context deadline exceeded", "| started", consoleSays)
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("a 1 s timeout took %v", took)
	}
	vm.MustWaitUntilFails(t, "ps | grep -v grep | grep -q 'sleep 60'")

	// WaitUntilSucceeds and WaitUntilFails.
	vm.MustSucceed(t, "(sleep 1; touch /tmp/later) >/dev/null 2>&1 &")
	if out := vm.MustWaitUntilSucceeds(t, "test -e /tmp/later && echo there"); out != "there\n" {
		t.Errorf("MustWaitUntilSucceeds: %q", out)
	}
	began = time.Now()
	msg = fails(t, func(tb testing.TB) { short.MustWaitUntilSucceeds(tb, "echo attempt; exit 5") })
	wantMessage(t, "MustWaitUntilSucceeds past its timeout", msg, `wait until succeeds "echo attempt; exit 5": context deadline exceeded after `,
		" attempts in ", "; the last attempt: exit status 5, want 0", "stdout:\n    | attempt", consoleSays)
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("a 1 s wait took %v", took)
	}
	wantMessage(t, "MustWaitUntilSucceeds of a hanging probe", fails(t, func(tb testing.TB) { short.MustWaitUntilSucceeds(tb, "sleep 60") }),
		"context deadline exceeded after 0 attempts in ", "the next one still running then (give the command a timeout of its own)")
	vm.MustSucceed(t, "touch /tmp/soon-gone; (sleep 1; rm /tmp/soon-gone) >/dev/null 2>&1 &")
	vm.MustWaitUntilFails(t, "test -e /tmp/soon-gone")
	wantMessage(t, "MustWaitUntilFails past its timeout", fails(t, func(tb testing.TB) { short.MustWaitUntilFails(tb, "true") }),
		`wait until fails "true": context deadline exceeded after`, "the last attempt: exit status 0, want a failure")

	// WaitForFile.
	vm.MustSucceed(t, "(sleep 1; mkdir /tmp/dir) >/dev/null 2>&1 &")
	vm.MustWaitForFile(t, "/tmp/dir")
	wantMessage(t, "MustWaitForFile past its timeout", fails(t, func(tb testing.TB) { short.MustWaitForFile(tb, "/no/such/file") }),
		`wait for file "/no/such/file": context deadline exceeded after`, "the last attempt: it does not exist", consoleSays)

	// WaitForOpenPort, with a web server that starts a second late; then
	// ForwardPort brings it to the host.
	vm.MustSucceed(t, "ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up") // the user network's guest address
	vm.MustSucceed(t, "mkdir -p /tmp/www && echo page > /tmp/www/index.html && (sleep 1; httpd -p 8080 -h /tmp/www) >/dev/null 2>&1 &")
	vm.MustWaitForOpenPort(t, 8080)
	wantMessage(t, "MustWaitForOpenPort past its timeout", fails(t, func(tb testing.TB) { short.MustWaitForOpenPort(tb, 9) }),
		"wait for open port 9: context deadline exceeded after", "the last attempt: no TCP socket listens on port 9", "local_address", consoleSays)
	wantMessage(t, "MustWaitForOpenPort(70000)", fails(t, func(tb testing.TB) { vm.MustWaitForOpenPort(tb, 70000) }), "port 70000: expected 1 to 65535")

	port := vm.MustForwardPort(t, 0, 8080)
	fetch := func(port int) string {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Errorf("fetching through the forward: %v", err)
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if page := fetch(port); page != "page\n" {
		t.Errorf("forwarded page: %q", page)
	}
	fixed, err := freeTCPPort()
	if err != nil {
		t.Fatal(err)
	}
	if got := vm.MustForwardPort(t, fixed, 8080); got != fixed || fetch(fixed) != "page\n" {
		t.Errorf("forward of a chosen port %d: %d", fixed, got)
	}
	_, err = vm.ForwardPort(ctx, fixed, 8080) // taken by the forward above
	wantMessage(t, "ForwardPort of a taken port", fmt.Sprint(err), fmt.Sprintf("forward host port %d to guest port 8080: ", fixed))

	// WaitForUnit: this guest's init is a shell script.
	err = vm.WaitForUnit(ctx, "sshd.service")
	if !errors.Is(err, ErrNoSystemd) {
		t.Errorf("WaitForUnit without systemd: %v", err)
	}
	wantMessage(t, "WaitForUnit", fmt.Sprint(err), `wait for unit "sshd.service": the guest does not run systemd`)

	// WaitForConsole.
	vm.MustSucceed(t, "echo console-marker-42 > /dev/console")
	if line := vm.MustWaitForConsole(t, `console-marker-\d+`); line != "console-marker-42" {
		t.Errorf("MustWaitForConsole: %q", line)
	}
	wantMessage(t, "MustWaitForConsole past its timeout", fails(t, func(tb testing.TB) { short.MustWaitForConsole(tb, "never printed") }),
		`wait for console "never printed": context deadline exceeded`, "console-marker-42")
	wantMessage(t, "MustWaitForConsole of a bad pattern", fails(t, func(tb testing.TB) { vm.MustWaitForConsole(tb, "(") }), "console pattern")

	// CopyTo and CopyFrom, and a copy that fails.
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "in"), []byte("to the guest and back\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	vm.MustCopyTo(t, filepath.Join(host, "in"), "/tmp/copied")
	vm.MustCopyFrom(t, "/tmp/copied", filepath.Join(host, "out"))
	if b, err := os.ReadFile(filepath.Join(host, "out")); err != nil || string(b) != "to the guest and back\n" {
		t.Errorf("round trip: %q %v", b, err)
	}
	wantMessage(t, "MustCopyFrom of a missing file", fails(t, func(tb testing.TB) { vm.MustCopyFrom(tb, "/no/such", filepath.Join(host, "x")) }),
		`copy guest "/no/such" to host`, consoleSays)
}

// sendTCP sends msg from one VM to a listener on the other and checks that
// it arrived: busybox nc on both ends, the listener in the background.
func sendTCP(t *testing.T, from, to *VM, toAddr string, port int, msg string) {
	t.Helper()
	to.MustSucceed(t, fmt.Sprintf("nc -l -p %d </dev/null >/tmp/got-%d 2>&1 &", port, port))
	to.MustWaitForOpenPort(t, port)
	from.MustSucceed(t, fmt.Sprintf("echo %s | nc -w 10 %s %d", msg, toAddr, port))
	to.MustWaitUntilSucceeds(t, fmt.Sprintf("grep -qx %s /tmp/got-%d", msg, port))
}

// Two VMs on a Network exchange TCP both ways; a blocked link stops the
// traffic and an unblocked one brings it back; after the VMs, nothing of
// them or their LAN remains.
func TestNetworkPartition(t *testing.T) {
	t.Parallel()
	cfg := smallConfig(t)
	cfg.Net = vmm.NetNone // the LAN is eth0
	lan := NewNetwork(t)
	a := StartT(t, lan.Attach(cfg, ""))
	b := StartT(t, lan.Attach(cfg, "192.168.77.2/24"))
	lone := StartT(t, cfg) // on no LAN
	if lan.Addr(a) != fmt.Sprintf("10.%d.0.1", lan.subnet) || lan.Addr(b) != "192.168.77.2" || lan.Addr(lone) != "" {
		t.Fatalf("addresses: %q %q %q", lan.Addr(a), lan.Addr(b), lan.Addr(lone))
	}
	// Different subnets on one segment: each reaches the other through a
	// route on the link.
	a.MustSucceed(t, "ip route add 192.168.77.0/24 dev eth0")
	b.MustSucceed(t, fmt.Sprintf("ip route add 10.%d.0.0/24 dev eth0", lan.subnet))

	sendTCP(t, a, b, lan.Addr(b), 7001, "from-a-to-b")
	sendTCP(t, b, a, lan.Addr(a), 7002, "from-b-to-a")

	// Cut a's link: a connection to a listener on a times out (nc -w 2),
	// and a reaches no one either.
	a.MustSucceed(t, "nc -l -p 7003 </dev/null >/tmp/got-7003 2>&1 &")
	a.MustWaitForOpenPort(t, 7003)
	lan.MustBlock(t, a)
	b.MustFail(t, fmt.Sprintf("echo cut | nc -w 2 %s 7003", lan.Addr(a)))
	a.MustFail(t, fmt.Sprintf("echo cut | nc -w 2 %s 7003", lan.Addr(b)))
	lan.MustUnblock(t, a)
	b.MustWaitUntilSucceeds(t, fmt.Sprintf("echo healed | nc -w 2 %s 7003", lan.Addr(a)))
	a.MustWaitUntilSucceeds(t, "grep -qx healed /tmp/got-7003")

	wantMessage(t, "Block of a VM on no LAN", fails(t, func(tb testing.TB) { lan.MustBlock(tb, lone) }),
		"VM "+lone.Name()+": block its link to network "+lan.Name()+": the VM is not on network")

	// Nothing remains: no run directory, no process naming a VM or the LAN
	// (QEMU, virtiofsd, the LAN's switch) and no LAN directory. The switch
	// is nobody's child: it leaves DefaultGrace after its last port, so
	// this is polled, within a bound.
	names := []string{a.Name(), b.Name(), lone.Name(), lan.Name()}
	for _, vm := range []*VM{a, b, lone} {
		if err := vm.Close(); err != nil {
			t.Errorf("closing %s: %v", vm.Name(), err)
		}
	}
	vms, _ := rundir.Reap()
	for _, o := range vms {
		if slices.Contains(names, o.Name) {
			t.Errorf("VM %s is still listed: %+v", o.Name, o)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := leftovers(names)
		if _, err := os.Stat(filepath.Join(vlan.DefaultDir(), lan.Name())); err == nil {
			left = append(left, "the LAN's directory")
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %s", strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := vlan.Inspect(context.Background(), lan.Name()); !errors.Is(err, vlan.ErrNoSwitch) {
		t.Errorf("the LAN's switch: %v", err)
	}
}

// leftovers lists the processes whose command line names one of names.
func leftovers(names []string) []string {
	var left []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || p.Name() == "self" {
			continue
		}
		for _, n := range names {
			if bytes.Contains(cmdline, []byte(n)) {
				left = append(left, fmt.Sprintf("process %s: %s", p.Name(), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
				break
			}
		}
	}
	return left
}

// artifactsChild, set, makes TestArtifactsChild run: it is TestArtifacts's
// deliberately failing test, in a process of its own.
const artifactsChild = "SONIX_HARNESS_ARTIFACTS_CHILD"

func TestArtifactsChild(t *testing.T) {
	if os.Getenv(artifactsChild) == "" {
		t.Skip("run by TestArtifacts")
	}
	cfg := smallConfig(t)
	lan := NewNetwork(t)
	vm := StartT(t, lan.Attach(cfg, ""))
	vm.MustSucceed(t, "echo artifact-marker; echo to-stderr >&2")
	vm.MustRun(t, "echo before-exit-3; exit 3")
	src := filepath.Join(t.TempDir(), "copied")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	vm.MustCopyTo(t, src, "/tmp/copied")
	lan.MustBlock(t, vm)
	fmt.Printf("VM-NAME=%s\n", vm.Name())
	t.Error("a deliberate failure, for the artifacts")
}

// A failed test leaves each VM's console, command log and reproduce line
// in $SONIX_ARTIFACTS/<test>, and its log names the directory.
func TestArtifacts(t *testing.T) {
	if os.Getenv(artifactsChild) != "" {
		t.Skip("this is the child")
	}
	t.Parallel()
	testsystem.ForTest(t, "x86_64") // skips where the child would
	base := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestArtifactsChild$", "-test.v")
	cmd.Env = append(os.Environ(), artifactsChild+"=1", ArtifactsEnv+"="+base)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("the child should fail: %v\n%s", err, out)
	}
	dir := filepath.Join(base, "TestArtifactsChild")
	wantMessage(t, "the child's log", string(out), "a deliberate failure", "harness: artifacts of this failed test (each VM's console, commands and reproduce line): "+dir,
		"to reproduce VM TestArtifactsChild-")
	m := regexp.MustCompile(`(?m)^VM-NAME=(\S+)$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no VM name in the child's output:\n%s", out)
	}
	name := string(m[1])
	read := func(file string) string {
		b, err := os.ReadFile(filepath.Join(dir, name+file))
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	wantMessage(t, "console.log", read(".console.log"), "s] sonix-test: root-fstype=tmpfs\n", "sonix-test: eth1 has 10.")
	wantMessage(t, "commands.log", read(".commands.log"), "VM "+name+", booting /", "how it ended: stopped by Close",
		"s] exec \"echo artifact-marker; echo to-stderr >&2\"\n           exit status 0 after ", "| artifact-marker\n", "| to-stderr\n",
		"exec \"echo before-exit-3; exit 3\"\n           exit status 3", "| before-exit-3\n",
		`] copy host "/`, "/copied\" to guest \"/tmp/copied\"\n           done after", "block network TestArtifactsChi-")
	wantMessage(t, "reproduce.sh", read(".reproduce.sh"), "#!/bin/sh\n", "exec sonix-run --memory 256M --cpus 1 --accel tcg --name "+name+" --store /",
		" --append no_timer_check --vlan TestArtifactsChi-", "=10.", "# The hypervisor's command line", "run's directory):\n# /", "qemu-system-x86_64")
	if entries, _ := os.ReadDir(base); len(entries) != 1 {
		t.Errorf("artifacts base holds %d entries, want the test's directory only", len(entries))
	}
}
