package launcher

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/vmm"
)

// fakeBackend is a vmm.Backend whose machine the test drives: it unit-tests
// the run lifecycle (endings, signals in each phase, teardown) without a VM.
type fakeBackend struct {
	name string
	t    *testing.T

	mu      sync.Mutex
	events  []string
	machine *fakeMachine
	// hooks
	resolve  func(ctx context.Context) error
	onStart  func(m *fakeMachine)
	stopErr  error
	stopHang bool // Stop never finishes (a hypervisor that ignores it)
}

func (b *fakeBackend) Name() string { return b.name }
func (b *fakeBackend) Features() vmm.Features {
	return vmm.Features{NetNone: true, Forwards: true}
}
func (b *fakeBackend) record(e string) {
	b.mu.Lock()
	b.events = append(b.events, e)
	b.mu.Unlock()
}
func (b *fakeBackend) Events() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.events...)
}
func (b *fakeBackend) Resolve(ctx context.Context, vm *vmm.VM, mode vmm.Mode, log vmm.Log) error {
	b.record("resolve")
	if vm.Accel == vmm.AccelAuto {
		vm.Accel = vmm.AccelTCG
	}
	if b.resolve != nil {
		return b.resolve(ctx)
	}
	return nil
}
func (b *fakeBackend) Commands(vm *vmm.VM) ([]vmm.Process, error) {
	return nil, errors.New("in-process")
}
func (b *fakeBackend) Start(ctx context.Context, vm *vmm.VM, c vmm.Console, log vmm.Log) (vmm.Machine, error) {
	b.record("start")
	if _, err := os.Stat(vm.RunDir); err != nil {
		b.t.Errorf("the run directory does not exist at start: %v", err)
	}
	m := &fakeMachine{b: b, done: make(chan struct{}), out: c.Out}
	b.mu.Lock()
	b.machine = m
	b.mu.Unlock()
	if b.onStart != nil {
		go b.onStart(m)
	}
	return m, nil
}

type fakeMachine struct {
	b        *fakeBackend
	mu       sync.Mutex
	done     chan struct{}
	ended    bool
	outcome  vmm.Outcome
	shutdown int
	out      *os.File
}

// end makes the VM end as e.
func (m *fakeMachine) end(e vmm.Ending) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended {
		return
	}
	m.ended = true
	m.outcome = vmm.Outcome{Ending: e, Err: errors.New("the fake hypervisor failed")}
	close(m.done)
}
func (m *fakeMachine) Done() <-chan struct{} { return m.done }
func (m *fakeMachine) Outcome() vmm.Outcome {
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.outcome
}
func (m *fakeMachine) Shutdown(ctx context.Context) error {
	m.b.record("shutdown")
	m.mu.Lock()
	m.shutdown++
	m.mu.Unlock()
	return nil
}
func (m *fakeMachine) Stop(ctx context.Context) error {
	m.b.record("stop")
	if !m.b.stopHang {
		m.end(vmm.Stopped)
	}
	select {
	case <-m.done:
		return m.b.stopErr
	case <-ctx.Done():
		return fmt.Errorf("the fake VM has not stopped: %w", ctx.Err())
	}
}
func (m *fakeMachine) AgentPort() <-chan vmm.PortState { return nil }

func (m *fakeMachine) AddForward(ctx context.Context, f vmm.Forward) error {
	return errors.New("no network")
}
func (m *fakeMachine) AgentConn(ctx context.Context) (io.ReadWriteCloser, error) {
	return nil, errors.New("no agent")
}

var fakeSeq int

// fakeSystem writes a store with a boot.json whose kernel looks like a
// bzImage, registers a fresh fake backend, and returns a Config for both.
func fakeSystem(t *testing.T) (config.Config, *fakeBackend) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "rt"))
	os.Mkdir(filepath.Join(dir, "rt"), 0o700)
	store := filepath.Join(dir, "store")
	os.MkdirAll(filepath.Join(store, "k"), 0o755)
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x100)
	copy(img[0x300:], "6.1.0-test (fake)\x00")
	os.WriteFile(filepath.Join(store, "k", "bzImage"), img, 0o644)
	os.MkdirAll(filepath.Join(store, "x"), 0o755)
	os.WriteFile(filepath.Join(store, "x", "init"), []byte("#!/bin/sh\n"), 0o755)
	bj := filepath.Join(dir, "boot.json")
	os.WriteFile(bj, []byte(`{"org.nixos.bootspec.v1": {"init": "/nix/store/x/init", "kernel": "/nix/store/k/bzImage", "kernelParams": [], "label": "l", "system": "x86_64-linux", "toplevel": "/nix/store/x"}}`), 0o644)
	fakeSeq++
	b := &fakeBackend{name: fmt.Sprintf("fake%d", fakeSeq), t: t}
	vmm.Register(b)
	return config.Config{Target: bj, StoreDir: store, Backend: b.name, Net: vmm.NetNone, StopTimeout: time.Second}, b
}

func noRunDirs(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(os.Getenv("XDG_RUNTIME_DIR"))
	for _, e := range entries {
		t.Errorf("run directory left behind: %s", e.Name())
	}
}

func TestEndings(t *testing.T) {
	for _, tt := range []struct {
		ending vmm.Ending
		want   Reason // 0: nil
	}{
		{vmm.PoweredOff, 0}, {vmm.Panicked, GuestPanic}, {vmm.Reset, GuestReset}, {vmm.Failed, Failure},
	} {
		t.Run(tt.ending.String(), func(t *testing.T) {
			cfg, b := fakeSystem(t)
			b.onStart = func(m *fakeMachine) { m.end(tt.ending) }
			err := Run(context.Background(), cfg)
			if tt.want == 0 && err != nil || tt.want != 0 && ReasonOf(err) != tt.want {
				t.Errorf("Run = %v (reason %d), want reason %d", err, ReasonOf(err), tt.want)
			}
			noRunDirs(t)
		})
	}
}

func TestTimeout(t *testing.T) {
	cfg, b := fakeSystem(t)
	cfg.Timeout = 50 * time.Millisecond
	err := Run(context.Background(), cfg)
	if ReasonOf(err) != Timeout {
		t.Fatalf("Run = %v, want a Timeout", err)
	}
	if ev := b.Events(); !contains(ev, "stop") {
		t.Errorf("events %q: the VM was not stopped", ev)
	}
	noRunDirs(t)
}

// onSupervising runs f once the supervisor has taken the signals over.
func onSupervising(t *testing.T, f func()) {
	old := supervising
	t.Cleanup(func() { supervising = old })
	supervising = func(*Instance) { f() }
}

func TestSignalPowerButtonThenStop(t *testing.T) {
	// One signal presses the power button; the guest powers off: 128+N.
	cfg, b := fakeSystem(t)
	sigs := make(chan os.Signal, 2)
	cfg.Signals = sigs
	onSupervising(t, func() { sigs <- syscall.SIGTERM })
	b.onStart = func(m *fakeMachine) {
		for {
			m.mu.Lock()
			n := m.shutdown
			m.mu.Unlock()
			if n > 0 {
				m.end(vmm.PoweredOff)
				return
			}
			select {
			case <-m.done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	err := Run(context.Background(), cfg)
	var e *Error
	if !errors.As(err, &e) || e.Reason != Interrupted || e.Signal != syscall.SIGTERM {
		t.Fatalf("Run = %v, want stopped by SIGTERM", err)
	}
	if ev := b.Events(); !contains(ev, "shutdown") || contains(ev, "stop") && ev[len(ev)-1] != "stop" {
		t.Errorf("events %q: want the power button, the guest powering off by itself", ev)
	}
	// A second signal stops at once, without waiting for the guest.
	cfg, b = fakeSystem(t)
	sigs = make(chan os.Signal, 2)
	cfg.Signals, cfg.StopTimeout = sigs, time.Hour
	onSupervising(t, func() { sigs <- syscall.SIGINT; sigs <- syscall.SIGINT })
	start := time.Now()
	err = Run(context.Background(), cfg)
	if !errors.As(err, &e) || e.Signal != syscall.SIGINT || time.Since(start) > 5*time.Second {
		t.Fatalf("Run = %v after %v, want stopped by SIGINT at once", err, time.Since(start))
	}
	if ev := b.Events(); !contains(ev, "shutdown") || !contains(ev, "stop") {
		t.Errorf("events %q", ev)
	}
	noRunDirs(t)
}

func TestSignalBeforeTheVMRuns(t *testing.T) {
	cfg, b := fakeSystem(t)
	sigs := make(chan os.Signal, 1)
	cfg.Signals = sigs
	b.resolve = func(ctx context.Context) error {
		sigs <- syscall.SIGHUP
		<-ctx.Done() // a slow preparation step that honours its context
		return ctx.Err()
	}
	start := time.Now()
	err := Run(context.Background(), cfg)
	var e *Error
	if !errors.As(err, &e) || e.Reason != Interrupted || e.Signal != syscall.SIGHUP {
		t.Fatalf("Run = %v, want stopped by SIGHUP", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %v", took)
	}
	if ev := b.Events(); contains(ev, "start") {
		t.Errorf("events %q: the VM was started after the signal", ev)
	}
	noRunDirs(t)
}

func TestTeardownErrorsAreReported(t *testing.T) {
	cfg, b := fakeSystem(t)
	b.stopErr = errors.New("could not reap the hypervisor")
	cfg.Timeout = 10 * time.Millisecond
	err := Run(context.Background(), cfg)
	if ReasonOf(err) != Timeout || !strings.Contains(fmt.Sprint(err), "could not reap the hypervisor") {
		t.Fatalf("Run = %v, want the timeout and the teardown error", err)
	}
	noRunDirs(t)
}

func TestTeardownIsBounded(t *testing.T) {
	defer func(d time.Duration) { stopBound = d }(stopBound)
	stopBound = 200 * time.Millisecond
	// A hypervisor that never ends: the run still ends, saying so.
	cfg, b := fakeSystem(t)
	b.stopHang = true
	cfg.Timeout = 10 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), cfg) }()
	select {
	case err := <-done:
		t.Logf("Run = %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if b.machine != nil {
		b.machine.end(vmm.Stopped)
	}
}

func TestValidateChangesNothing(t *testing.T) {
	cfg, _ := fakeSystem(t)
	cfg.Shares = []vmm.Share{{HostDir: "relative-dir", Tag: "t"}}
	before := fmt.Sprintf("%+v", cfg)
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a missing --share directory")
	}
	if after := fmt.Sprintf("%+v", cfg); before != after {
		t.Errorf("Validate changed the Config:\n%s\n%s", before, after)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// privateDir is a new directory of the test's that passes the checks of a
// base of run directories (t.TempDir gives 0755).
func privateDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}
