// Package harness is sonix-run for Go tests: boot a VM once, wait for
// console output, run commands in the guest with their exit status, stdout
// and stderr, shut it down, and leak nothing.
//
//	vm := harness.StartT(t, launcher.Config{Target: "./result"})
//	res := vm.MustRun(t, "uname -r")
//
// Commands go through the guest's agent (docs/harness.md), which the test
// system and sonix-run's NixOS module provide.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/launcher"
	_ "github.com/sonix-run/sonix-run/qemu" // the backends a test may boot with
	_ "github.com/sonix-run/sonix-run/vz"
)

// VM is a booted guest.
type VM struct {
	inst    *launcher.Instance
	console *console
	agent   *launcher.Agent

	closeOnce sync.Once
	closeErr  error
}

// Result is how a command ended.
type Result struct {
	Status int
	Stdout []byte
	Stderr []byte
}

// Start boots the system cfg names. ctx bounds the whole life of the VM:
// when it ends, the VM is stopped. The agent's ports are always added;
// cfg.Stdout, if set, also gets the console.
func Start(ctx context.Context, cfg launcher.Config) (*VM, error) {
	c, ok := cfg.Stdout.(*console) // StartT's, which logs lines
	if !ok {
		c = newConsole(cfg.Stdout)
	}
	cfg.Stdout = c
	cfg.Agent = true
	cfg.Stdin = nil
	cfg.Command = ""
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	inst, err := launcher.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	vm := &VM{inst: inst, console: c}
	go func() {
		<-inst.Done()
		c.end()
	}()
	if vm.agent, err = inst.Agent(ctx); err != nil {
		vm.Close()
		return nil, err
	}
	return vm, nil
}

// WaitFor waits until a console line matches re and returns it (lines seen
// since the start count too, and each line is returned at most once).
func (vm *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	return vm.console.waitFor(ctx, re)
}

// Run runs cmd in the guest (sh -c, as root) and returns its status and output.
func (vm *VM) Run(ctx context.Context, cmd string) (Result, error) {
	var out, errb bytes.Buffer
	st, err := vm.RunStream(ctx, cmd, nil, &out, &errb)
	return Result{Status: st, Stdout: out.Bytes(), Stderr: errb.Bytes()}, err
}

// RunStream runs cmd with stdin (nil for none), streaming its output.
func (vm *VM) RunStream(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	st, err := vm.agent.Run(ctx, cmd, stdin, stdout, stderr)
	if errors.Is(err, launcher.ErrVMEnded) {
		if werr := vm.inst.Wait(); werr != nil {
			return st, fmt.Errorf("running %q: %w", cmd, werr)
		}
	}
	return st, err
}

// Shutdown powers the guest off gracefully: through its agent, else by the
// ACPI power button; when ctx ends first, the VM is stopped. It returns how
// the VM ended (nil for a clean poweroff).
func (vm *VM) Shutdown(ctx context.Context) error {
	if vm.agent.PowerOff() != nil {
		vm.inst.Shutdown(ctx)
	}
	select {
	case <-vm.inst.Done():
		return vm.inst.Wait()
	case <-ctx.Done():
		return vm.inst.Stop(fmt.Errorf("shutdown: %w", ctx.Err()))
	}
}

// Close stops the VM if it still runs and cleans everything up; it is safe
// to call more than once and after Shutdown.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() {
		if vm.agent != nil {
			vm.agent.Close()
		}
		select {
		case <-vm.inst.Done():
			vm.closeErr = vm.inst.Wait()
		default:
			vm.closeErr = vm.inst.Stop(errors.New("closed"))
		}
		if launcher.ReasonOf(vm.closeErr) == launcher.Interrupted {
			vm.closeErr = nil // stopped because we asked
		}
	})
	return vm.closeErr
}

// Command is the command line that reproduces this VM.
func (vm *VM) Command() string { return launcher.ShellJoin(vm.inst.Command()) }

// console records the guest console line by line for WaitFor.
type console struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	next    int           // lines before this were returned by WaitFor
	changed chan struct{} // closed at a new line
	ended   bool
	tee     io.Writer
	logLine func(string)
}

func newConsole(tee io.Writer) *console {
	return &console{changed: make(chan struct{}), tee: tee}
}

func (c *console) Write(p []byte) (int, error) {
	if c.tee != nil {
		c.tee.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	consumed := 0
	for {
		i := bytes.IndexByte(c.partial[consumed:], '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(c.partial[consumed:consumed+i], "\r"))
		c.lines = append(c.lines, line)
		if c.logLine != nil {
			c.logLine(line)
		}
		consumed += i + 1
	}
	if consumed > 0 {
		c.partial = append(c.partial[:0], c.partial[consumed:]...)
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return len(p), nil
}

func (c *console) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *console) waitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	for {
		c.mu.Lock()
		for i := c.next; i < len(c.lines); i++ {
			if re.MatchString(c.lines[i]) {
				c.next = i + 1
				c.mu.Unlock()
				return c.lines[i], nil
			}
		}
		ended, changed := c.ended, c.changed
		c.mu.Unlock()
		if ended {
			return "", fmt.Errorf("the VM ended before its console showed %q", re)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q on the console: %w", re, ctx.Err())
		}
	}
}

// DefaultTimeout bounds each WaitFor and Run of a VM started with StartT.
const DefaultTimeout = 5 * time.Minute
