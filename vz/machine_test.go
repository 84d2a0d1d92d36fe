package vz

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/launcher"
)

func TestEndingWatcher(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   launcher.Ending
	}{
		{"silent", []string{"Welcome to NixOS\r\n"}, 0},
		{"poweroff", []string{"[  OK  ] Reached target Power-Off.\r\n", "[   12.5] reboot: Power down\r\n"}, launcher.PoweredOff},
		{"halt", []string{"[    3.1] reboot: System halted\n"}, launcher.PoweredOff},
		{"reboot", []string{"[    3.1] reboot: Restarting system\r\n"}, launcher.Reset},
		{"panic", []string{"[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n"}, launcher.Panicked},
		{"mark split across writes", []string{"[ 1.0] Kernel pa", "nic - not sync", "ing: Attempted to kill init!\r\n"}, launcher.Panicked},
		{"panic sticks", []string{"Kernel panic - not syncing: x\n", "reboot: Power down\n"}, launcher.Panicked},
		{"latest end wins", []string{"reboot: Restarting system\n", "reboot: Power down\n"}, launcher.PoweredOff},
		{"unfinished last line", []string{"[ 9.9] reboot: Power down"}, launcher.PoweredOff},
		{"many lines in one write", []string{"a\nb\nreboot: Restarting system\nc\n"}, launcher.Reset},
		{"long line is bounded", []string{strings.Repeat("x", 10*maxLine), "reboot: Power down\n"}, launcher.PoweredOff},
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
	if out.String() != "boot\r\nreboot: Power down\r\n" || w.Ending() != launcher.PoweredOff {
		t.Errorf("copied %q, ending %v", out.String(), w.Ending())
	}
	// A failing destination does not stop the reading: the guest must not
	// block on its console.
	w = &endingWatcher{}
	copyConsole(failingWriter{}, strings.NewReader("x\nKernel panic - not syncing: y\n"), w)
	if w.Ending() != launcher.Panicked {
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
	requested      int
	stops          int
	powerOffOnReq  bool
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
	defer f.mu.Unlock()
	f.stops++
	if f.stopErr == nil {
		f.states <- fakeStopped
	}
	return f.stopErr
}

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

// startFake wires a machine as the darwin adapter does: console output
// through a pipe the "framework" writes, files released after the end.
func startFake(t *testing.T, f *fakeVM) (*machine, io.Writer, *bytes.Buffer, func() []string) {
	t.Helper()
	m := newMachine(f)
	r, w := io.Pipe()
	var out bytes.Buffer
	copyDone := make(chan struct{})
	go func() {
		defer close(copyDone)
		copyConsole(&out, r, m.watcher)
	}()
	var mu sync.Mutex
	var closed []string
	m.vzOut = w
	m.copyDone = copyDone
	m.release = []io.Closer{closeRecorder{"in", &closed, &mu}, closeRecorder{"out", &closed, &mu}}
	go watchStates(m, f.states, fakeState)
	f.states <- fakeRunning
	return m, w, &out, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), closed...) }
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
	m, console, out, closed := startFake(t, f)
	io.WriteString(console, "[ 5.0] reboot: Power down\r\n")
	f.states <- fakeStopped
	waitDone(t, m)
	if got := m.Outcome(); got != (launcher.Outcome{Ending: launcher.PoweredOff}) {
		t.Errorf("outcome %+v", got)
	}
	if out.String() != "[ 5.0] reboot: Power down\r\n" {
		t.Errorf("console %q: output written before the end must all arrive", out.String())
	}
	if got := closed(); strings.Join(got, ",") != "in,out" {
		t.Errorf("released %v", got)
	}
	if err := m.Stop(); err != nil || f.stops != 0 {
		t.Errorf("Stop after the end: %v, %d framework stops", err, f.stops)
	}
	if err := m.Shutdown(context.Background()); err != nil || f.requested != 0 {
		t.Errorf("Shutdown after the end: %v", err)
	}
}

func TestMachineSilentStopIsPowerOff(t *testing.T) {
	f := newFakeVM()
	m, _, _, _ := startFake(t, f)
	f.states <- fakeStopping
	f.states <- fakeStopped
	waitDone(t, m)
	if got := m.Outcome().Ending; got != launcher.PoweredOff {
		t.Errorf("ending %v", got)
	}
}

func TestMachineGuestPanicAndReboot(t *testing.T) {
	for _, tc := range []struct {
		text string
		want launcher.Ending
	}{
		{"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n", launcher.Panicked},
		{"reboot: Restarting system\r\n", launcher.Reset},
	} {
		f := newFakeVM()
		m, console, _, _ := startFake(t, f)
		io.WriteString(console, tc.text)
		f.states <- fakeStopped
		waitDone(t, m)
		if got := m.Outcome().Ending; got != tc.want {
			t.Errorf("%q: ending %v, want %v", tc.text, got, tc.want)
		}
	}
}

func TestMachineErrorState(t *testing.T) {
	f := newFakeVM()
	m, _, _, closed := startFake(t, f)
	f.states <- fakeError
	waitDone(t, m)
	out := m.Outcome()
	if out.Ending != launcher.Failed || !errors.Is(out.Err, errStateError) {
		t.Errorf("outcome %+v", out)
	}
	if len(closed()) != 2 {
		t.Errorf("files not released after an error: %v", closed())
	}
}

func TestMachineShutdownThenGuestPowersOff(t *testing.T) {
	f := newFakeVM()
	f.powerOffOnReq = true
	m, console, _, _ := startFake(t, f)
	io.WriteString(console, "reboot: Power down\n")
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitDone(t, m)
	if f.requested != 1 || m.Outcome().Ending != launcher.PoweredOff {
		t.Errorf("requests %d, outcome %+v", f.requested, m.Outcome())
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
			m, _, _, _ := startFake(t, f)
			if err := m.Shutdown(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
			m.Stop()
		})
	}
}

func TestMachineStop(t *testing.T) {
	f := newFakeVM()
	m, console, _, closed := startFake(t, f)
	io.WriteString(console, "reboot: Power down\n") // the launcher's Stop still wins
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Stop returned before the end")
	}
	if got := m.Outcome(); got != (launcher.Outcome{Ending: launcher.Stopped}) {
		t.Errorf("outcome %+v", got)
	}
	if err := m.Stop(); err != nil || f.stops != 1 {
		t.Errorf("second Stop: %v, %d framework stops", err, f.stops)
	}
	if len(closed()) != 2 {
		t.Errorf("released %v", closed())
	}
}

func TestMachineStopFails(t *testing.T) {
	saved := stopWait
	stopWait = 50 * time.Millisecond
	defer func() { stopWait = saved }()

	f := newFakeVM()
	f.stopErr = errors.New("invalid state transition")
	m, _, _, _ := startFake(t, f)
	if err := m.Stop(); err == nil || !strings.Contains(err.Error(), "stopping the VM: invalid state transition") {
		t.Errorf("got %v", err)
	}

	f = newFakeVM()
	f.canStop = false
	m, _, _, _ = startFake(t, f)
	if err := m.Stop(); err == nil || !strings.Contains(err.Error(), "cannot be stopped") {
		t.Errorf("got %v", err)
	}
	// The guest ends by itself after all: Stop's failure does not matter.
	f.states <- fakeStopped
	waitDone(t, m)
	if err := m.Stop(); err != nil {
		t.Errorf("Stop after the end: %v", err)
	}
}

func TestStopRacingGuestPowerOff(t *testing.T) {
	// The framework refuses the stop because the guest is already stopping;
	// Stop waits for the end instead of failing.
	f := newFakeVM()
	f.stopErr = errors.New("invalid state transition")
	m, _, _, _ := startFake(t, f)
	go func() {
		time.Sleep(20 * time.Millisecond)
		f.states <- fakeStopped
	}()
	if err := m.Stop(); err != nil {
		t.Errorf("got %v", err)
	}
}

func TestBackend(t *testing.T) {
	var b launcher.Backend = Backend{}
	if b.Name() != "vz" || b.UsesVirtiofsd() {
		t.Errorf("Name %q UsesVirtiofsd %v", b.Name(), b.UsesVirtiofsd())
	}
	vm := baseVM(t, gzipped(t, fakeImage()))
	if argv, err := b.Command(vm); argv != nil || err != nil {
		t.Errorf("Command = %v, %v; the VM runs in-process", argv, err)
	}
	var log bytes.Buffer
	if err := (Backend{Options: arm}).Resolve(context.Background(), vm, true, &log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "decompressed into the run directory") || !strings.Contains(log.String(), "no VM command to print") {
		t.Errorf("notices: %q", log.String())
	}
	vm.Shares[0].Tag = strings.Repeat("s", 40)
	if err := (Backend{Options: arm}).Resolve(context.Background(), vm, false, nil); err == nil {
		t.Error("Resolve accepted a 40-byte tag")
	}
}
