package vz

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/vmm"
)

func TestEndingWatcher(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   vmm.Ending
	}{
		{"silent", []string{"Welcome to NixOS\r\n"}, 0},
		{"poweroff", []string{"[  OK  ] Reached target Power-Off.\r\n", "[   12.5] reboot: Power down\r\n"}, vmm.PoweredOff},
		{"halt", []string{"[    3.1] reboot: System halted\n"}, vmm.PoweredOff},
		{"reboot", []string{"[    3.1] reboot: Restarting system\r\n"}, vmm.Reset},
		{"panic", []string{"[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n"}, vmm.Panicked},
		{"mark split across writes", []string{"[ 1.0] Kernel pa", "nic - not sync", "ing: Attempted to kill init!\r\n"}, vmm.Panicked},
		{"panic sticks", []string{"Kernel panic - not syncing: x\n", "reboot: Power down\n"}, vmm.Panicked},
		{"latest end wins", []string{"reboot: Restarting system\n", "reboot: Power down\n"}, vmm.PoweredOff},
		{"unfinished last line", []string{"[ 9.9] reboot: Power down"}, vmm.PoweredOff},
		{"many lines in one write", []string{"a\nb\nreboot: Restarting system\nc\n"}, vmm.Reset},
		{"long line is bounded", []string{strings.Repeat("x", 10*maxLine), "reboot: Power down\n"}, vmm.PoweredOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &endingWatcher{}
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if len(w.line) > maxLine {
				t.Errorf("kept %d bytes of a line", len(w.line))
			}
			if got := w.Ending(); got != tc.want {
				t.Errorf("ending %v, want %v", got, tc.want)
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, errors.New("closed") }

func TestCopyConsole(t *testing.T) {
	var out bytes.Buffer
	w := &endingWatcher{}
	copyConsole(&out, strings.NewReader("boot\r\nreboot: Power down\r\n"), w)
	if out.String() != "boot\r\nreboot: Power down\r\n" || w.Ending() != vmm.PoweredOff {
		t.Errorf("copied %q, ending %v", out.String(), w.Ending())
	}
	// A failing destination does not stop the reading: the guest must not
	// block on its console.
	w = &endingWatcher{}
	copyConsole(failingWriter{}, strings.NewReader("x\nKernel panic - not syncing: y\n"), w)
	if w.Ending() != vmm.Panicked {
		t.Errorf("ending %v after a failing destination", w.Ending())
	}
}

// fakeVM plays the framework's VM: Stop and RequestStop report states as the
// framework would, on the one state channel.
type fakeVM struct {
	mu             sync.Mutex
	states         chan int
	canRequestStop bool
	requestStopOK  bool
	requestStopErr error
	canStop        bool
	stopErr        error
	// stoppedAnyway: the stop fails, but the guest's own poweroff ends the
	// VM at the same time.
	stoppedAnyway bool
	// stopBlocks, when not nil, holds Stop until it is closed, as a
	// framework that does not answer.
	stopBlocks chan struct{}
	// silentStop: Stop succeeds but the state change never comes.
	silentStop    bool
	requested     int
	stops         int
	powerOffOnReq bool
}

const (
	fakeRunning = iota
	fakeStopped
	fakeError
	fakeStopping
)

func fakeState(s int) vmState {
	switch s {
	case fakeStopped:
		return stateStopped
	case fakeError:
		return stateError
	}
	return stateOther
}

func newFakeVM() *fakeVM {
	return &fakeVM{states: make(chan int, 16), canRequestStop: true, requestStopOK: true, canStop: true}
}

func (f *fakeVM) CanRequestStop() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.canRequestStop }
func (f *fakeVM) CanStop() bool        { f.mu.Lock(); defer f.mu.Unlock(); return f.canStop }

func (f *fakeVM) RequestStop() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requested++
	if f.powerOffOnReq {
		f.states <- fakeStopping
		f.states <- fakeStopped
	}
	return f.requestStopOK, f.requestStopErr
}

func (f *fakeVM) Stop() error {
	f.mu.Lock()
	block := f.stopBlocks
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	if (f.stopErr == nil && !f.silentStop) || f.stoppedAnyway {
		f.states <- fakeStopped
	}
	return f.stopErr
}

func (f *fakeVM) stopCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.stops }

type closeRecorder struct {
	name string
	log  *[]string
	mu   *sync.Mutex
}

func (c closeRecorder) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*c.log = append(*c.log, c.name)
	return nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// shortConsoleWaits makes the console's bounds short for a test.
func shortConsoleWaits(t *testing.T) {
	t.Helper()
	q, d := consoleQuiet, consoleDrainWait
	consoleQuiet, consoleDrainWait = 50*time.Millisecond, 500*time.Millisecond
	t.Cleanup(func() { consoleQuiet, consoleDrainWait = q, d })
}

// fakeRun is a machine wired as the darwin adapter wires one: console
// output through a real pipe the "framework" writes, files released after
// the end.
type fakeRun struct {
	m       *machine
	console *os.File // the framework's write end of the console pipe
	out     *bytes.Buffer
	closed  func() []string
}

// startFake starts a machine on f. With frameworkKeepsCopy the framework
// keeps its own copy of the console pipe's write end open after the VM has
// ended, so the copy never sees end-of-file.
func startFake(t *testing.T, f *fakeVM, frameworkKeepsCopy bool) *fakeRun {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	m := newMachine(f)
	out := &bytes.Buffer{}
	var ours io.Closer = w
	if frameworkKeepsCopy {
		ours = nopCloser{}
	}
	m.console = startConsoleCopy(out, r, ours, m.watcher)
	var mu sync.Mutex
	var closed []string
	m.release = []io.Closer{closeRecorder{"in", &closed, &mu}, closeRecorder{"out", &closed, &mu}}
	go watchStates(m, f.states, fakeState)
	f.states <- fakeRunning
	t.Cleanup(func() {
		// Every goroutine the machine started has ended: the state watcher
		// and the console copy with done, the stop call with stopReturned.
		waitDone(t, m)
		m.mu.Lock()
		stopCalled := m.stopped
		m.mu.Unlock()
		if stopCalled {
			select {
			case <-m.stopReturned:
			case <-time.After(5 * time.Second):
				t.Error("the framework's stop call never returned")
			}
		}
	})
	return &fakeRun{m: m, console: w, out: out, closed: func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), closed...) }}
}

func waitDone(t *testing.T, m *machine) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the machine did not end")
	}
}

func TestMachineGuestPowerOff(t *testing.T) {
	f := newFakeVM()
	r := startFake(t, f, false)
	io.WriteString(r.console, "[ 5.0] reboot: Power down\r\n")
	f.states <- fakeStopped
	waitDone(t, r.m)
	if got := r.m.Outcome(); got != (vmm.Outcome{Ending: vmm.PoweredOff}) {
		t.Errorf("outcome %+v", got)
	}
	if r.out.String() != "[ 5.0] reboot: Power down\r\n" {
		t.Errorf("console %q: output written before the end must all arrive", r.out.String())
	}
	if got := r.closed(); strings.Join(got, ",") != "in,out" {
		t.Errorf("released %v", got)
	}
	if err := r.m.Stop(context.Background()); err != nil || f.stopCount() != 0 {
		t.Errorf("Stop after the end: %v, %d framework stops", err, f.stopCount())
	}
	if err := r.m.Shutdown(context.Background()); err != nil || f.requested != 0 {
		t.Errorf("Shutdown after the end: %v", err)
	}
}

// The framework's VM service may keep a copy of the console pipe's write
// end: the run still ends, with the output written before the stop, within
// the console's bound.
func TestMachineEndsWithoutConsoleEOF(t *testing.T) {
	shortConsoleWaits(t)
	f := newFakeVM()
	r := startFake(t, f, true)
	io.WriteString(r.console, "sonix-test: last words\n[ 5.0] reboot: Power down\r\n")
	start := time.Now()
	f.states <- fakeStopped
	waitDone(t, r.m)
	if took := time.Since(start); took > consoleDrainWait+2*consoleQuiet+time.Second {
		t.Errorf("the end took %v", took)
	}
	if got := r.m.Outcome(); got != (vmm.Outcome{Ending: vmm.PoweredOff}) {
		t.Errorf("outcome %+v", got)
	}
	if want := "sonix-test: last words\n[ 5.0] reboot: Power down\r\n"; r.out.String() != want {
		t.Errorf("console %q, want %q", r.out.String(), want)
	}
	if len(r.closed()) != 2 {
		t.Errorf("released %v", r.closed())
	}
}

// A framework that keeps writing after the stopped state (never quiet, never
// closing) is cut at consoleDrainWait.
func TestConsoleEndBoundedUnderEndlessOutput(t *testing.T) {
	shortConsoleWaits(t)
	consoleQuiet = time.Minute // only the limit may cut: a busy test machine can starve the writer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	w := &endingWatcher{}
	c := startConsoleCopy(io.Discard, pr, nopCloser{}, w)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		line := []byte("still talking\n")
		for {
			if _, err := pw.Write(line); err != nil {
				return // the read end is closed below
			}
		}
	}()
	start := time.Now()
	if !c.end() {
		t.Error("the copy did not end")
	}
	if took := time.Since(start); took < consoleDrainWait || took > consoleDrainWait+time.Second {
		t.Errorf("end took %v, want about %v", took, consoleDrainWait)
	}
	pr.Close()
	select {
	case <-writerDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not see the closed pipe")
	}
}

// A full destination (the launcher's console pipe, unread) does not hold
// the end either: the destination's deadline ends the blocked write.
func TestConsoleEndBoundedUnderFullDestination(t *testing.T) {
	shortConsoleWaits(t)
	src, fw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	defer fw.Close()
	dr, dst, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close() // never read: the pipe fills
	defer dst.Close()
	c := startConsoleCopy(dst, src, fw, &endingWatcher{})
	// 100 KiB: more than the destination pipe (at most 64 KiB) and the
	// copy's buffer (32 KiB) hold, so the copy blocks writing; less than
	// they and the source pipe (at least 16 KiB) hold, so this write ends.
	if _, err := fw.Write(bytes.Repeat([]byte("x"), 100<<10)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !c.end() {
		t.Error("the copy did not end")
	}
	if took := time.Since(start); took > consoleDrainWait+time.Second {
		t.Errorf("end took %v", took)
	}
}

func TestMachineSilentStopIsPowerOff(t *testing.T) {
	f := newFakeVM()
	r := startFake(t, f, false)
	f.states <- fakeStopping
	f.states <- fakeStopped
	waitDone(t, r.m)
	if got := r.m.Outcome().Ending; got != vmm.PoweredOff {
		t.Errorf("ending %v", got)
	}
}

// The console's last words against the framework's end state. A panic is
// 122 even when the framework reports its error state (formerly 120).
func TestMachineClassifiesConsoleBeforeErrorState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		state int
		want  vmm.Ending
	}{
		{"panic, stopped", "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n", fakeStopped, vmm.Panicked},
		{"panic, error state", "[ 2.1] Kernel panic - not syncing: sysrq triggered crash\r\n", fakeError, vmm.Panicked},
		{"reboot, stopped", "reboot: Restarting system\r\n", fakeStopped, vmm.Reset},
		{"reboot, error state", "reboot: Restarting system\r\n", fakeError, vmm.Reset},
		{"poweroff, error state", "reboot: Power down\r\n", fakeError, vmm.Failed},
		{"silence, error state", "", fakeError, vmm.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeVM()
			r := startFake(t, f, false)
			io.WriteString(r.console, tc.text)
			f.states <- tc.state
			waitDone(t, r.m)
			out := r.m.Outcome()
			if out.Ending != tc.want {
				t.Errorf("ending %v, want %v", out.Ending, tc.want)
			}
			if (out.Ending == vmm.Failed) != errors.Is(out.Err, errStateError) {
				t.Errorf("outcome %+v: Err must be the framework's error exactly when Failed", out)
			}
			if len(r.closed()) != 2 {
				t.Errorf("files not released: %v", r.closed())
			}
		})
	}
}

func TestClassify(t *testing.T) {
	fw := errors.New("framework")
	for _, tc := range []struct {
		err     error
		stopped bool
		console vmm.Ending
		want    vmm.Outcome
	}{
		{nil, false, 0, vmm.Outcome{Ending: vmm.PoweredOff}},
		{nil, false, vmm.PoweredOff, vmm.Outcome{Ending: vmm.PoweredOff}},
		{nil, false, vmm.Reset, vmm.Outcome{Ending: vmm.Reset}},
		{nil, true, vmm.PoweredOff, vmm.Outcome{Ending: vmm.Stopped}},
		{nil, true, vmm.Panicked, vmm.Outcome{Ending: vmm.Panicked}},
		{fw, false, vmm.Panicked, vmm.Outcome{Ending: vmm.Panicked}},
		{fw, true, vmm.Panicked, vmm.Outcome{Ending: vmm.Panicked}},
		{fw, false, vmm.Reset, vmm.Outcome{Ending: vmm.Reset}},
		{fw, false, vmm.PoweredOff, vmm.Outcome{Ending: vmm.Failed, Err: fw}},
		{fw, true, 0, vmm.Outcome{Ending: vmm.Failed, Err: fw}},
	} {
		if got := classify(tc.err, tc.stopped, tc.console); got != tc.want {
			t.Errorf("classify(%v, stopped %v, console %v) = %+v, want %+v", tc.err, tc.stopped, tc.console, got, tc.want)
		}
	}
}

func TestMachineShutdownThenGuestPowersOff(t *testing.T) {
	f := newFakeVM()
	f.powerOffOnReq = true
	r := startFake(t, f, false)
	io.WriteString(r.console, "reboot: Power down\n")
	if err := r.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitDone(t, r.m)
	if f.requested != 1 || r.m.Outcome().Ending != vmm.PoweredOff {
		t.Errorf("requests %d, outcome %+v", f.requested, r.m.Outcome())
	}
}

func TestMachineShutdownRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(f *fakeVM)
		want string
	}{
		{"cannot request", func(f *fakeVM) { f.canRequestStop = false }, "cannot take a stop request"},
		{"request failed", func(f *fakeVM) { f.requestStopErr = errors.New("boom") }, "requesting a stop: boom"},
		{"request not made", func(f *fakeVM) { f.requestStopOK = false }, "did not deliver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeVM()
			tc.edit(f)
			r := startFake(t, f, false)
			if err := r.m.Shutdown(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
			r.m.Stop(context.Background())
		})
	}
}

func TestMachineStop(t *testing.T) {
	f := newFakeVM()
	r := startFake(t, f, false)
	io.WriteString(r.console, "reboot: Power down\n") // the launcher's Stop still wins
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.m.Done():
	default:
		t.Fatal("Stop returned before the end")
	}
	if got := r.m.Outcome(); got != (vmm.Outcome{Ending: vmm.Stopped}) {
		t.Errorf("outcome %+v", got)
	}
	if err := r.m.Stop(context.Background()); err != nil || f.stopCount() != 1 {
		t.Errorf("second Stop: %v, %d framework stops", err, f.stopCount())
	}
	if len(r.closed()) != 2 {
		t.Errorf("released %v", r.closed())
	}
}

// The framework confirms the stop but its state change never comes: the
// confirmation ends the machine.
func TestMachineStopConfirmedWithoutStateChange(t *testing.T) {
	shortConsoleWaits(t)
	f := newFakeVM()
	f.silentStop = true
	r := startFake(t, f, true) // and the console never sees end-of-file
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.m.Outcome(); got != (vmm.Outcome{Ending: vmm.Stopped}) {
		t.Errorf("outcome %+v", got)
	}
}

// A framework whose stop call never answers: Stop returns when its context
// ends, and again on each later call, so --timeout can end the run.
func TestMachineStopHonoursContext(t *testing.T) {
	f := newFakeVM()
	release := make(chan struct{})
	f.stopBlocks = release
	r := startFake(t, f, false)
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		err := r.m.Stop(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "has not stopped") {
			t.Errorf("Stop %d: %v", i, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Stop %d took %v with a 50ms context", i, took)
		}
	}
	close(release) // the framework answers at last
	waitDone(t, r.m)
	if got := r.m.Outcome().Ending; got != vmm.Stopped {
		t.Errorf("ending %v", got)
	}
	if n := f.stopCount(); n != 1 {
		t.Errorf("%d framework stop calls, want 1", n)
	}
}

func TestMachineStopFails(t *testing.T) {
	saved := stopWait
	stopWait = 50 * time.Millisecond
	defer func() { stopWait = saved }()

	f := newFakeVM()
	f.stopErr = errors.New("invalid state transition")
	r := startFake(t, f, false)
	if err := r.m.Stop(context.Background()); err == nil || !strings.Contains(err.Error(), "stopping the VM: invalid state transition") {
		t.Errorf("got %v", err)
	}
	f.states <- fakeStopped

	f = newFakeVM()
	f.canStop = false
	r = startFake(t, f, false)
	if err := r.m.Stop(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot be stopped") {
		t.Errorf("got %v", err)
	}
	// The guest ends by itself after all: Stop's failure does not matter.
	f.states <- fakeStopped
	waitDone(t, r.m)
	if err := r.m.Stop(context.Background()); err != nil {
		t.Errorf("Stop after the end: %v", err)
	}
}

func TestStopRacingGuestPowerOff(t *testing.T) {
	// The framework refuses the stop because the guest is already stopping;
	// Stop waits for the end instead of failing.
	f := newFakeVM()
	f.stopErr = errors.New("invalid state transition")
	f.stoppedAnyway = true
	r := startFake(t, f, false)
	if err := r.m.Stop(context.Background()); err != nil {
		t.Errorf("got %v", err)
	}
}

func TestMachineWithoutAgent(t *testing.T) {
	r := startFake(t, newFakeVM(), false)
	if c, err := r.m.AgentConn(context.Background()); c != nil || err == nil || !strings.Contains(err.Error(), "no agent port") {
		t.Errorf("AgentConn = %v, %v", c, err)
	}
	r.m.Stop(context.Background())
}

func TestBackend(t *testing.T) {
	var b vmm.Backend = Backend{}
	want := vmm.Features{Rosetta: true, Agent: true, NetNone: true, Disks: true}
	if f := b.Features(); b.Name() != "vz" || f != want {
		t.Errorf("Name %q Features %+v, want %+v", b.Name(), f, want)
	}
	vm := baseVM(t, gzipped(t, fakeImage()))
	if procs, err := b.Commands(vm); procs != nil || err == nil {
		t.Errorf("Commands = %v, %v; the VM runs in-process", procs, err)
	}
	var log bytes.Buffer
	if err := (Backend{Options: arm}).Resolve(context.Background(), vm, vmm.DryRun, vmm.LogTo(&log)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "decompressed into the run directory") || !strings.Contains(log.String(), "no VM command to print") {
		t.Errorf("notices: %q", log.String())
	}
	vm.Shares[0].Tag = strings.Repeat("s", 40)
	if err := (Backend{Options: arm}).Resolve(context.Background(), vm, vmm.Boot, nil); err == nil {
		t.Error("Resolve accepted a 40-byte tag")
	}
}
