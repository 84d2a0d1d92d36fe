package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vlan"
	"github.com/sonix-run/sonix-run/vmm"
)

// Real tables from a Linux guest: a listener on 0.0.0.0:2024 (07E8), one
// on [::]:80 (0050), an established connection from port 8080 (1F90) and a
// TIME_WAIT one on 443 (01BB).
const tcpTablesSample = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 47 1 000000000c86d49d 100 0 0 10 0
   1: 0F02000A:1F90 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 48 1 000000000c86d49e 20 4 30 10 -1
   2: 0F02000A:01BB 0202000A:C351 06 00000000:00000000 03:00000F3C 00000000     0        0 0 3 0000000000000000
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 50 1 0000000000000000 100 0 0 10 0
`

func TestTCPListening(t *testing.T) {
	for port, want := range map[int]bool{2024: true, 80: true, 8080: false, 443: false, 1: false, 0x0A: false} {
		if got := tcpListening([]byte(tcpTablesSample), port); got != want {
			t.Errorf("port %d: listening %v, want %v", port, got, want)
		}
	}
	if tcpListening(nil, 80) || tcpListening([]byte("garbage\n0: :0050 x 0A\n"), 80) {
		t.Error("listening found in no table")
	}
}

// The table comes from the guest: any text is parsed without a panic, and
// a well-formed listening line is always found.
func FuzzTCPListening(f *testing.F) {
	f.Add([]byte(tcpTablesSample), 80)
	f.Add([]byte("0: 00000000:FFFF 00000000:0000 0A\n"), 65535)
	f.Add([]byte("\x00:\n::::: 0A 0A"), 0)
	f.Fuzz(func(t *testing.T, table []byte, port int) {
		tcpListening(table, port)
		if port < 1 || port > 65535 {
			return
		}
		line := fmt.Sprintf("\n   7: 0100007F:%04X 00000000:0000 0A 00000000:00000000\n", port)
		if !tcpListening(append(append([]byte(nil), table...), line...), port) {
			t.Errorf("a listener on %d appended to %q is not found", port, table)
		}
	})
}

func TestNames(t *testing.T) {
	for _, prefix := range []string{"TestX", "TestPairs/case_#3", "", "///", strings.Repeat("Ü", 80), "-lead"} {
		vm, lan := uniqueVMName(prefix), uniqueLANName(prefix)
		if err := rundir.CheckName(vm); err != nil {
			t.Errorf("VM name from %q: %v", prefix, err)
		}
		if err := vlan.CheckName(lan); err != nil {
			t.Errorf("LAN name from %q: %v", prefix, err)
		}
	}
	if a, b := uniqueVMName("TestX"), uniqueVMName("TestX"); a == b {
		t.Errorf("two names alike: %s", a)
	}
	if got := sanitizeName("TestA/sub case", 100); got != "TestA.sub.case" {
		t.Errorf("sanitizeName: %q", got)
	}
}

// Whatever a test is called, the names made from it are valid.
func FuzzNames(f *testing.F) {
	f.Add("TestPairs/one")
	f.Add("\x00/..")
	f.Fuzz(func(t *testing.T, prefix string) {
		if err := rundir.CheckName(uniqueVMName(prefix)); err != nil {
			t.Error(err)
		}
		if err := vlan.CheckName(uniqueLANName(prefix)); err != nil {
			t.Error(err)
		}
		s := sanitizeName(prefix, 150)
		if s == "" || strings.ContainsAny(s, "/\x00") || s == "." || s == ".." {
			t.Errorf("file name %q from %q", s, prefix)
		}
	})
}

func TestReproduceLine(t *testing.T) {
	cfg := config.Config{
		Target: "/tmp/sys/toplevel", StoreDir: "/tmp/sys/store", Name: "TestX-1a-2",
		Net: vmm.NetNone, VLANs: []vmm.VLAN{{LAN: "TestX-1a-1"}}, Append: []string{"sonix.ip=10.1.0.1/24,02:00:00:00:00:01", "quiet"},
		Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 8080, GuestPort: 80}},
		CPUs:     1, MemoryMiB: 256, Accel: vmm.AccelTCG, Timeout: 90 * time.Second,
		Devices: vmm.Devices{
			Shares: []vmm.Share{{HostDir: "/srv/data", Tag: "data", ReadOnly: true}},
			Disks:  []vmm.Disk{{Path: "/img/a b.qcow2", Format: "qcow2", ReadOnly: true}},
		},
	}
	want := "sonix-run --memory 256M --cpus 1 --accel tcg --name TestX-1a-2 --store /tmp/sys/store" +
		" --append sonix.ip=10.1.0.1/24,02:00:00:00:00:01 --append quiet --net none --forward tcp:8080:80" +
		" --disk '/img/a b.qcow2,format=qcow2,ro' --vlan TestX-1a-1 --share /srv/data:data:ro --timeout 1m30s /tmp/sys/toplevel"
	if got := reproduceLine(cfg); got != want {
		t.Errorf("reproduce line:\n got %s\nwant %s", got, want)
	}
	if got := reproduceLine(config.Config{Target: "./result"}); got != "sonix-run ./result" {
		t.Errorf("defaults: %s", got)
	}
}

func TestCommandLogBounds(t *testing.T) {
	l := newCommandLog(time.Now())
	e := l.start("exec", `"yes"`)
	w := e.stdout(nil)
	chunk := []byte(strings.Repeat("y\n", 1000))
	for i := 0; i < 200; i++ { // 400 kB
		w.Write(chunk)
	}
	e.stderr(nil).Write([]byte("no newline"))
	e.finish(141, nil)
	for i := 0; i < logMaxEntries+5; i++ {
		l.start("exec", fmt.Sprintf(`"true %d"`, i)).finish(0, nil)
	}
	var b strings.Builder
	if err := l.writeTo(&b); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if !strings.HasPrefix(s, "[6 earlier entries dropped") || strings.Contains(s, `"yes"`) || !strings.Contains(s, fmt.Sprintf(`"true %d"`, logMaxEntries+4)) {
		t.Errorf("entries not bounded to the latest: %.300s", s)
	}

	l = newCommandLog(time.Now())
	e = l.start("exec", `"yes"`)
	for i := 0; i < 200; i++ {
		e.stdout(nil).Write(chunk)
	}
	e.stderr(nil).Write([]byte("no newline"))
	e.finish(141, nil)
	l.start("copy", `guest "/x" to host "/y"`).finish(0, errors.New("no such file"))
	l.start("exec", `"sleep 9"`)
	b.Reset()
	l.writeTo(&b)
	s = b.String()
	for _, want := range []string{
		"exec \"yes\"\n           exit status 141 after",
		fmt.Sprintf("stdout: [first %d bytes dropped]", 400000-logStreamMax),
		"| no newline\n             [no newline at the end]",
		"error after", "no such file",
		"still running when the log was written",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if n := strings.Count(s, "| y\n"); n != logStreamMax/2 {
		t.Errorf("the log keeps %d lines of the big output, want the last %d", n, logStreamMax/2)
	}
}

func TestErrorMessage(t *testing.T) {
	e := &Error{VM: "vm-1", Op: `succeed "false"`, Problem: "exit status 1, want 0",
		Result:  &Result{Status: 1, Stdout: nil, Stderr: []byte("oops\nbad\n")},
		Console: []string{"booted", "sonix-test: starting the agent"}}
	want := "VM vm-1: succeed \"false\": exit status 1, want 0\n  stdout: (empty)\n  stderr:\n    | oops\n    | bad\n" +
		"  last 2 console lines:\n    | booted\n    | sonix-test: starting the agent"
	if e.Error() != want {
		t.Errorf("message:\n%s\nwant:\n%s", e.Error(), want)
	}
	e = &Error{VM: "vm-1", Op: "wait", Err: fmt.Errorf("%w after 3 attempts", context.DeadlineExceeded), Problem: "it does not exist",
		Result: &Result{Stdout: []byte(strings.Repeat("x", 3*messageOutputMax))}}
	if !errors.Is(e, context.DeadlineExceeded) || !strings.Contains(e.Error(), "context deadline exceeded after 3 attempts; the last attempt: it does not exist") ||
		!strings.Contains(e.Error(), fmt.Sprintf("[first %d bytes left out]", 2*messageOutputMax)) || !strings.Contains(e.Error(), "console: (nothing yet)") {
		t.Errorf("message: %s", e)
	}
}

func TestArtifactsDir(t *testing.T) {
	base := t.TempDir()
	var dirs []string
	for i := 0; i < 3; i++ {
		d, err := makeArtifactsDir(base, "TestA/sub", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, filepath.Base(d))
	}
	if strings.Join(dirs, " ") != "TestA.sub TestA.sub.2 TestA.sub.3" {
		t.Errorf("directories: %v", dirs)
	}
	t.Setenv("TMPDIR", base)
	d, err := makeArtifactsDir("", "TestB", time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local))
	if want := filepath.Join(base, fmt.Sprintf("sonix-run-%d", os.Geteuid()), "artifacts", fmt.Sprintf("TestB-20250102-030405-%d", os.Getpid())); err != nil || d != want {
		t.Errorf("default directory %s %v, want %s", d, err, want)
	}
	if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := makeArtifactsDir(filepath.Join(base, "file"), "TestC", time.Now()); err == nil || !strings.Contains(err.Error(), ArtifactsEnv) {
		t.Errorf("artifacts under a file: %v", err)
	}
}

// fakeT records what a Must call or Attach does to a test, and stops the
// goroutine at Fatal as testing.T does.
type fakeT struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msgs   []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatal(args ...any) {
	f.record(fmt.Sprint(args...))
	runtime.Goexit()
}
func (f *fakeT) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }
func (f *fakeT) Errorf(format string, args ...any) { f.record(fmt.Sprintf(format, args...)) }
func (f *fakeT) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
	f.msgs = append(f.msgs, s)
}

// fails runs fn with a fakeT in a goroutine of its own, as a test, and
// returns what failed it ("" if nothing).
func fails(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n")
}

func TestNetworkAttach(t *testing.T) {
	n := NewNetwork(t)
	if err := vlan.CheckName(n.Name()); err != nil || !strings.HasPrefix(n.Name(), "TestNetworkAttac") {
		t.Errorf("LAN name %q: %v", n.Name(), err)
	}
	if NewNetwork(t).Name() == n.Name() {
		t.Error("two Networks share a name")
	}
	base := config.Config{Target: "x", VLANs: []vmm.VLAN{{LAN: "other"}}, Append: []string{"quiet"}}
	a := n.Attach(base, "")
	b := n.Attach(base, "")
	c := n.Attach(config.Config{Target: "x", Name: "mine"}, "192.168.7.3/24")
	if a.Name == "" || a.Name == b.Name || c.Name != "mine" {
		t.Errorf("names %q %q %q", a.Name, b.Name, c.Name)
	}
	// The launcher gives the guest its address on the LAN (sonix.ip=, with
	// the NIC's MAC) from the VLAN's Addr.
	wantA := vmm.VLAN{LAN: n.Name(), Addr: netip.MustParsePrefix(fmt.Sprintf("10.%d.0.1/24", n.subnet))}
	if len(a.VLANs) != 2 || a.VLANs[0].LAN != "other" || a.VLANs[1] != wantA || len(a.Append) != 1 {
		t.Errorf("attached config: %v %q, want %v", a.VLANs, a.Append, wantA)
	}
	if len(base.VLANs) != 1 || len(b.VLANs) != 2 || b.VLANs[1].Addr.String() != fmt.Sprintf("10.%d.0.2/24", n.subnet) {
		t.Errorf("the caller's config was changed, or b is wrong: %v %v", base.VLANs, b.VLANs)
	}
	if len(c.VLANs) != 1 || c.VLANs[0].Addr.String() != "192.168.7.3/24" || n.addrs["mine"] != "192.168.7.3" {
		t.Errorf("chosen address: %v", c.VLANs)
	}
	for what, call := range map[string]func(tb testing.TB){
		"not an address": func(tb testing.TB) {
			(&Network{t: tb, name: "x", addrs: map[string]string{}, used: map[string]string{}}).Attach(base, "10.0.0.1")
		},
		"attached twice":   func(tb testing.TB) { n.t = tb; n.Attach(c, "") },
		"address is taken": func(tb testing.TB) { n.t = tb; n.Attach(base, "192.168.7.3/24") },
	} {
		if msg := fails(t, call); !strings.Contains(msg, "network") {
			t.Errorf("%s: %q", what, msg)
		}
	}
}

// A VM that cannot start fails its test with the reason, the console and
// the artifacts' directory, which holds the reproduce line.
func TestStartTFailure(t *testing.T) {
	t.Setenv(ArtifactsEnv, t.TempDir())
	missing := filepath.Join(t.TempDir(), "no-such-system")
	// No StoreDir: a missing target is what must be reported, also on a
	// host without /nix/store.
	msg := fails(t, func(tb testing.TB) { StartT(tb, config.Config{Target: missing, Name: "never-booted"}) })
	if !strings.Contains(msg, "starting VM never-booted") || !strings.Contains(msg, missing) || !strings.Contains(msg, "artifacts (console, reproduce line): ") {
		t.Fatalf("message: %s", msg)
	}
	dir := msg[strings.LastIndex(msg, ": ")+2:]
	sh, err := os.ReadFile(filepath.Join(dir, "never-booted.reproduce.sh"))
	if err != nil || !strings.Contains(string(sh), "sonix-run --name never-booted "+missing) {
		t.Errorf("reproduce.sh: %q %v", sh, err)
	}
	cmds, err := os.ReadFile(filepath.Join(dir, "never-booted.commands.log"))
	if err != nil || !strings.Contains(string(cmds), "how it ended: it did not start: ") {
		t.Errorf("commands.log: %q %v", cmds, err)
	}
}

// The console is written by the launcher's goroutine while tests wait on
// it, quote its tail and write it out.
func TestConsoleConcurrent(t *testing.T) {
	c := newConsole(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			fmt.Fprintf(c, "line %d\r\n", i)
		}
		c.Write([]byte("partial"))
		c.end()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, want := range []string{"line 10", "line 1999"} {
		line, err := c.waitFor(ctx, regexp.MustCompile("^"+want+"$"))
		if err != nil || line != want {
			t.Errorf("waitFor %q: %q %v", want, line, err)
		}
		c.tail(3)
		c.writeTo(io.Discard)
	}
	<-done
	if _, err := c.waitFor(ctx, regexp.MustCompile("line 5$")); !errors.Is(err, ErrVMEnded) {
		t.Errorf("a line already returned, after the end: %v", err)
	}
	if got := strings.Join(c.tail(2), "|"); got != "line 1999|partial [no newline yet]" {
		t.Errorf("tail: %q", got)
	}
	var b strings.Builder
	c.writeTo(&b)
	if !strings.HasSuffix(b.String(), "s] line 1999\n[  at end ] partial [no newline]\n") {
		t.Errorf("console log ends %q", b.String()[b.Len()-60:])
	}
}
