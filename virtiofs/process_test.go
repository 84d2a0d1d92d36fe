package virtiofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a stand-in virtiofsd (as the daemon, it is run
// with fakeEnv set). What it does is named by its socket's file name, up to
// the first '-', so each share of one group can behave differently:
//
//	listen      listen; exit on SIGTERM
//	fail        say something on stderr and exit 1 without listening
//	ignoreterm  listen; ignore SIGTERM
//	never       never listen; exit on SIGTERM
//	together    listen only once all $SONIX_FAKE_TOGETHER daemons of the
//	            directory have started (giving up after 20 s): proof that
//	            they were started at the same time
const fakeEnv = "SONIX_FAKE_VIRTIOFSD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(fakeDaemon(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeDaemon(args []string) int {
	var socket string
	for _, a := range args {
		if s, ok := strings.CutPrefix(a, "--socket-path="); ok {
			socket = s
		}
	}
	if socket == "" {
		fmt.Fprintln(os.Stderr, "fake virtiofsd: no --socket-path")
		return 2
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	mode, _, _ := strings.Cut(filepath.Base(socket), "-")
	switch mode {
	case "fail":
		fmt.Fprintln(os.Stderr, "fuse: something is badly wrong")
		return 1
	case "never":
		<-term
		return 0
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	case "together":
		dir := filepath.Dir(socket)
		if err := os.WriteFile(socket+".started", nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		want, _ := strconv.Atoi(os.Getenv("SONIX_FAKE_TOGETHER"))
		for deadline := time.Now().Add(20 * time.Second); ; {
			started, _ := filepath.Glob(filepath.Join(dir, "*.started"))
			if len(started) >= want {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "only %d of %d daemons were started\n", len(started), want)
				return 1
			}
			time.Sleep(5 * time.Millisecond) // polls another process's progress
		}
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer l.Close()
	fmt.Fprintln(os.Stderr, "Waiting for vhost-user socket connection...")
	if mode == "ignoreterm" {
		select {} // until SIGKILL
	}
	<-term
	return 0
}

// fakeShares sets the stand-in up and returns shares named by mode, in a
// fresh run directory.
func fakeShares(t *testing.T, modes ...string) (*Daemon, []Share, string) {
	t.Helper()
	t.Setenv(fakeEnv, "1")
	// A race-enabled stand-in would linger a second at exit, by default.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	var shares []Share
	for i, m := range modes {
		shares = append(shares, Share{Name: fmt.Sprintf("tag%d", i), Dir: t.TempDir(), Socket: filepath.Join(run, fmt.Sprintf("%s-%d.sock", m, i)), Cache: "auto"})
	}
	return &Daemon{Path: exe, Flavour: Rust, ReadOnly: true}, shares, run
}

// processesUnder lists the live processes with dir on their command line.
func processesUnder(dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(dir+"/")) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join(p, "stat")); err == nil && bytes.Contains(stat, []byte(") Z ")) {
			continue
		}
		out = append(out, p+": "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return out
}

// A daemon that dies before listening fails Start at once, quoting its stderr.
func TestStartReportsAnEarlyExit(t *testing.T) {
	d, shares, _ := fakeShares(t, "fail")
	start := time.Now()
	_, err := Start(context.Background(), d, shares[0], nil)
	if err == nil || !strings.Contains(err.Error(), "something is badly wrong") || !strings.Contains(err.Error(), `"tag0"`) || !strings.Contains(err.Error(), shares[0].Dir) {
		t.Fatalf("got %v, want the share's tag and directory and the daemon's stderr", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("noticing the exit took %v", time.Since(start))
	}
}

// The daemons of a run start at the same time: each of these listens only
// once all have started.
func TestStartAllStartsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	d, shares, run := fakeShares(t, "together", "together", "together", "together")
	t.Setenv("SONIX_FAKE_TOGETHER", strconv.Itoa(len(shares)))
	g, err := StartAll(context.Background(), d, shares, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Procs) != len(shares) {
		t.Fatalf("%d processes for %d shares", len(g.Procs), len(shares))
	}
	for i, p := range g.Procs {
		if p.Share != shares[i] {
			t.Errorf("process %d serves %v, want %v", i, p.Share, shares[i])
		}
	}
	if err := g.Stop(0); err != nil {
		t.Error(err)
	}
	if left := processesUnder(run); len(left) > 0 {
		t.Errorf("left running: %q", left)
	}
	for _, s := range shares {
		if _, err := os.Stat(s.Socket); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind", s.Socket)
		}
	}
}

// One daemon that fails stops them all; the error is that one's, with its
// stderr, and not the others' being called off.
func TestStartAllStopsAllWhenOneFails(t *testing.T) {
	d, shares, run := fakeShares(t, "listen", "fail", "never", "ignoreterm")
	_, err := StartAll(context.Background(), d, shares, nil)
	if err == nil {
		t.Fatal("StartAll succeeded with a failing daemon")
	}
	msg := err.Error()
	for _, want := range []string{`"tag1"`, shares[1].Dir, "something is badly wrong"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "context canceled") || strings.Contains(msg, `"tag2"`) {
		t.Errorf("error %q reports the daemons that were merely called off", msg)
	}
	if left := processesUnder(run); len(left) > 0 {
		t.Errorf("left running: %q", left)
	}
}

// A read-only share that the daemon cannot serve read-only starts nothing.
func TestStartAllChecksEveryShareFirst(t *testing.T) {
	d, shares, run := fakeShares(t, "listen", "listen")
	d.ReadOnly = false // a Rust daemon before 1.13
	shares[1].ReadOnly = true
	if os.Geteuid() == 0 {
		d.Flavour = Legacy
		d.Path = "/nonexistent/virtiofsd"
		// As root the view would be used; make the first share fail instead.
		shares[0].Dir = "relative"
	}
	if _, err := StartAll(context.Background(), d, shares, nil); err == nil {
		t.Fatal("StartAll succeeded")
	}
	if left := processesUnder(run); len(left) > 0 {
		t.Errorf("started: %q", left)
	}
}

// Stopping waits for all daemons against one deadline: daemons that ignore
// SIGTERM cost termGrace once, not once each.
func TestGroupStopSharesItsDeadlines(t *testing.T) {
	if testing.Short() {
		t.Skip("takes termGrace")
	}
	d, shares, run := fakeShares(t, "ignoreterm", "ignoreterm", "ignoreterm")
	g, err := StartAll(context.Background(), d, shares, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = g.Stop(0)
	took := time.Since(start)
	if took > 2*termGrace {
		t.Errorf("stopping 3 daemons took %v; the deadline is shared, want about %v", took, termGrace)
	}
	if err == nil || strings.Count(err.Error(), "was killed") != 3 {
		t.Errorf("got %v, want each share reported as killed", err)
	}
	if left := processesUnder(run); len(left) > 0 {
		t.Errorf("left running: %q", left)
	}
	// Exited delivered each.
	for range shares {
		select {
		case <-g.Exited():
		case <-time.After(5 * time.Second):
			t.Fatal("Exited did not deliver every daemon")
		}
	}
}

// A daemon that exits on SIGTERM within the grace is not an error, and
// one that exits by itself while the VM runs is delivered by Exited.
func TestGroupExitedAndStop(t *testing.T) {
	d, shares, _ := fakeShares(t, "listen", "listen")
	g, err := StartAll(context.Background(), d, shares, nil)
	if err != nil {
		t.Fatal(err)
	}
	if errs := g.ExitErrors(); len(errs) != 0 {
		t.Errorf("ExitErrors of running daemons: %v", errs)
	}
	if err := g.Procs[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-g.Exited():
		if p != g.Procs[1] {
			t.Errorf("Exited delivered %v", p.Share)
		}
		if msg := p.ExitError().Error(); !strings.Contains(msg, `"tag1"`) || !strings.Contains(msg, "Waiting for vhost-user") {
			t.Errorf("ExitError = %q, want the share and the stderr tail", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Exited did not deliver the daemon that ended")
	}
	if errs := g.ExitErrors(); len(errs) != 1 {
		t.Errorf("ExitErrors = %v, want one", errs)
	}
	if err := g.Stop(0); err != nil {
		t.Errorf("Stop: %v", err)
	}
	var nilGroup *Group
	if err := nilGroup.Stop(0); err != nil || nilGroup.ExitErrors() != nil {
		t.Error("a nil Group is not empty")
	}
}

// A run called off while a daemon starts ends the wait at once, stops the
// daemon and says why.
func TestStartAllCalledOff(t *testing.T) {
	d, shares, run := fakeShares(t, "never", "listen")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := StartAll(ctx, d, shares, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"tag0"`) {
		t.Errorf("got %v, want the context's error naming the share", err)
	}
	if took := time.Since(start); took > termGrace+time.Second {
		t.Errorf("took %v", took)
	}
	if left := processesUnder(run); len(left) > 0 {
		t.Errorf("left running: %q", left)
	}
}

// The real legacy daemon, where this machine has it and we are root.
func legacyDaemon(t *testing.T) *Daemon {
	t.Helper()
	const path = "/usr/lib/qemu/virtiofsd"
	if _, err := os.Stat(path); err != nil {
		t.Skip("needs the legacy virtiofsd at " + path)
	}
	requireRootAndUnshare(t)
	d, err := Inspect(context.Background(), path)
	if err != nil || d.Flavour != Legacy {
		t.Fatalf("Inspect: %+v, %v", d, err)
	}
	return d
}

// A read-only share served by the legacy daemon: the daemon sees its source
// only through a read-only mount in its own namespace, which the host never
// sees; a source path with a comma, a backslash, quotes and a space works;
// Stop leaves nothing.
func TestLegacyDaemonServesAReadOnlyView(t *testing.T) {
	d := legacyDaemon(t)
	src := filepath.Join(t.TempDir(), `st,o\re 'x'`)
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	s := Share{Name: "store", Dir: src, Socket: filepath.Join(run, "fs0-store.sock"), ReadOnly: true, Cache: "always"}
	p, err := Start(context.Background(), d, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(0)
	mnt := readOnlyMountPoint(s.Socket)

	// Through the daemon's own eyes.
	root := fmt.Sprintf("/proc/%d/root", p.cmd.Process.Pid)
	if b, err := os.ReadFile(filepath.Join(root, mnt, "f")); err != nil || string(b) != "original\n" {
		t.Fatalf("the daemon reads %q, %v from its source", b, err)
	}
	if err := os.WriteFile(filepath.Join(root, mnt, "PWNED"), nil, 0o644); !isEROFS(err) {
		t.Errorf("writing through the daemon's view: %v, want EROFS", err)
	}
	if err := os.Chmod(filepath.Join(root, mnt, "f"), 0o777); !isEROFS(err) {
		t.Errorf("chmod through the daemon's view: %v, want EROFS", err)
	}
	mountinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mountinfo), " "+mnt+" ro,") {
		t.Errorf("no read-only mount at %s in the daemon's namespace:\n%s", mnt, mountinfo)
	}
	host, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(host), run) {
		t.Errorf("the view is mounted on the host")
	}
	if entries, _ := os.ReadDir(src); len(entries) != 1 {
		t.Errorf("the source holds %d entries, want 1", len(entries))
	}
	if _, err := os.Stat(legacyPidFile(s.Socket)); err != nil {
		t.Errorf("expected the daemon's lock file: %v", err)
	}

	// Nobody connects, so it must be stopped by signal.
	if err := p.Stop(0); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("kill", "-0", strconv.Itoa(p.cmd.Process.Pid)).Run(); err == nil {
		t.Error("virtiofsd still runs after Stop")
	}
	for _, f := range []string{s.Socket, legacyPidFile(s.Socket), mnt} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}
	if _, err := net.Dial("unix", s.Socket); err == nil {
		t.Error("socket still accepts")
	}
}

// A writable share with an awkward path starts (its -o source= is escaped),
// and a daemon killed outright leaves a lock file that StaleFiles names.
func TestLegacyDaemonWritableAwkwardPathAndStaleFiles(t *testing.T) {
	d := legacyDaemon(t)
	src := filepath.Join(t.TempDir(), `w,o\rk 'x'`)
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	s := Share{Name: "work", Dir: src, Socket: filepath.Join(run, "fs0-work.sock"), Cache: "auto"}
	p, err := Start(context.Background(), d, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(0)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	lock := legacyPidFile(s.Socket)
	defer os.Remove(lock)
	if got := StaleFiles(run); len(got) != 1 || got[0] != lock {
		t.Errorf("StaleFiles = %q, want [%q]", got, lock)
	}
}
