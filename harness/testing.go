package harness

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/config"
)

// KeepEnv names the variable that keeps the VM of a failed test running:
// SONIX_KEEP=1 go test ... prints the `sonix-run shell NAME` line to reach
// it and waits until it is stopped (`sonix-run stop NAME`) before the test
// ends.
const KeepEnv = "SONIX_KEEP"

// StartT boots a VM for a test, in the spirit of vmtest's StartT: the VM is
// named after the test (unless cfg.Name is set), console lines go to
// t.Logf, Close is registered as a cleanup, a VM that fails to boot fails
// the test, and when the test fails its artifacts (console, command log,
// reproduce line) are written and their directory logged (see the package
// doc; with SONIX_KEEP=1 the VM is kept).
func StartT(t testing.TB, cfg config.Config) *VM {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = uniqueVMName(t.Name())
	}
	art := artifactsFor(t)
	c := newConsole(cfg.Stdout)
	name := cfg.Name
	c.logLine = func(l consoleLine) { t.Logf("[%6.2fs] %s: %s", l.at.Seconds(), name, l.text) }
	vm, err := start(context.Background(), cfg, c)
	if err != nil {
		msg := fmt.Sprintf("starting VM %s: %v\nlast console lines:\n  %s", name, err, strings.Join(c.tail(consoleTailLines), "\n  "))
		if dir, _, derr := art.directory(t.Name()); derr != nil {
			msg += "\nno artifacts: " + derr.Error()
		} else if werr := writeArtifacts(dir, cfg, c, newCommandLog(c.begin), "", "it did not start: "+err.Error()); werr != nil {
			msg += "\nwriting the artifacts: " + werr.Error()
		} else {
			msg += "\nartifacts (console, reproduce line): " + dir
		}
		c.release()
		t.Fatal(msg)
	}
	t.Cleanup(func() {
		defer c.release()
		if t.Failed() {
			if keep := os.Getenv(KeepEnv); keep != "" && keep != "0" {
				t.Logf("%s: VM %s is kept; reach it with `sonix-run shell %s`, end it with `sonix-run stop %s`", KeepEnv, vm.Name(), vm.Name(), vm.Name())
				<-vm.m.inst.Done()
			}
		}
		if err := vm.Close(); err != nil {
			t.Errorf("closing VM %s: %v", vm.Name(), err)
		}
		if !t.Failed() {
			return
		}
		t.Logf("to reproduce VM %s: %s", vm.Name(), vm.Reproduce())
		dir, first, err := art.directory(t.Name())
		if err == nil {
			err = vm.WriteArtifacts(dir)
		}
		switch {
		case err != nil:
			t.Logf("harness: the artifacts of VM %s could not be written: %v", vm.Name(), err)
		case first:
			t.Logf("harness: artifacts of this failed test (each VM's console, commands and reproduce line): %s", dir)
		}
	})
	return vm
}

// mustContext bounds a Must call: the VM's WithTimeout, else DefaultTimeout.
func (vm *VM) mustContext() (context.Context, context.CancelFunc) {
	d := vm.timeout
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(context.Background(), d)
}

// MustRun runs cmd (sh -c) and fails the test if the command could not be
// run; a non-zero status is returned, not a failure (see MustSucceed).
func (vm *VM) MustRun(t testing.TB, cmd string) Result {
	t.Helper()
	ctx, cancel := vm.mustContext()
	defer cancel()
	res, err := vm.Run(ctx, cmd)
	if err != nil {
		t.Fatal(vm.newError(fmt.Sprintf("run %q", cmd), resultIfAny(res), err))
	}
	return res
}

// MustWaitFor waits for a console line matching pattern and returns it;
// MustWaitForConsole is the same call.
func (vm *VM) MustWaitFor(t testing.TB, pattern string) string {
	t.Helper()
	re, err := regexp.Compile(pattern)
	if err != nil {
		t.Fatalf("VM %s: console pattern: %v", vm.Name(), err)
	}
	ctx, cancel := vm.mustContext()
	defer cancel()
	line, err := vm.WaitFor(ctx, re)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// MustWaitForConsole waits for a console line matching pattern and returns it.
func (vm *VM) MustWaitForConsole(t testing.TB, pattern string) string {
	t.Helper()
	return vm.MustWaitFor(t, pattern)
}

// MustSucceed is Succeed; an error fails the test.
func (vm *VM) MustSucceed(t testing.TB, cmd string) string {
	t.Helper()
	return vm.must(t, func(ctx context.Context) (string, error) { return vm.Succeed(ctx, cmd) })
}

// MustFail is Fail; an error (status 0 included) fails the test.
func (vm *VM) MustFail(t testing.TB, cmd string) string {
	t.Helper()
	return vm.must(t, func(ctx context.Context) (string, error) { return vm.Fail(ctx, cmd) })
}

// MustWaitUntilSucceeds is WaitUntilSucceeds; an error fails the test.
func (vm *VM) MustWaitUntilSucceeds(t testing.TB, cmd string) string {
	t.Helper()
	return vm.must(t, func(ctx context.Context) (string, error) { return vm.WaitUntilSucceeds(ctx, cmd) })
}

// MustWaitUntilFails is WaitUntilFails; an error fails the test.
func (vm *VM) MustWaitUntilFails(t testing.TB, cmd string) string {
	t.Helper()
	return vm.must(t, func(ctx context.Context) (string, error) { return vm.WaitUntilFails(ctx, cmd) })
}

// MustWaitForFile is WaitForFile; an error fails the test.
func (vm *VM) MustWaitForFile(t testing.TB, path string) {
	t.Helper()
	vm.must(t, func(ctx context.Context) (string, error) { return "", vm.WaitForFile(ctx, path) })
}

// MustWaitForOpenPort is WaitForOpenPort; an error fails the test.
func (vm *VM) MustWaitForOpenPort(t testing.TB, port int) {
	t.Helper()
	vm.must(t, func(ctx context.Context) (string, error) { return "", vm.WaitForOpenPort(ctx, port) })
}

// MustWaitForUnit is WaitForUnit; an error (a guest without systemd
// included) fails the test.
func (vm *VM) MustWaitForUnit(t testing.TB, unit string) {
	t.Helper()
	vm.must(t, func(ctx context.Context) (string, error) { return "", vm.WaitForUnit(ctx, unit) })
}

// MustCopyTo is CopyTo; an error fails the test.
func (vm *VM) MustCopyTo(t testing.TB, hostSrc, guestDst string) {
	t.Helper()
	vm.must(t, func(ctx context.Context) (string, error) { return "", vm.CopyTo(ctx, hostSrc, guestDst) })
}

// MustCopyFrom is CopyFrom; an error fails the test.
func (vm *VM) MustCopyFrom(t testing.TB, guestSrc, hostDst string) {
	t.Helper()
	vm.must(t, func(ctx context.Context) (string, error) { return "", vm.CopyFrom(ctx, guestSrc, hostDst) })
}

// MustForwardPort is ForwardPort; it returns the host port, and an error
// fails the test.
func (vm *VM) MustForwardPort(t testing.TB, hostPort, guestPort int) int {
	t.Helper()
	ctx, cancel := vm.mustContext()
	defer cancel()
	port, err := vm.ForwardPort(ctx, hostPort, guestPort)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func (vm *VM) must(t testing.TB, call func(context.Context) (string, error)) string {
	t.Helper()
	ctx, cancel := vm.mustContext()
	defer cancel()
	out, err := call(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
