package harness

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoSystemd is the cause of a WaitForUnit error in a guest whose PID 1 is
// not systemd (the busybox test system, a custom init).
var ErrNoSystemd = errors.New("the guest does not run systemd (its PID 1 is another init), so it has no units to wait for")

// ErrVMEnded is the cause of a wait that the VM's end cut short.
var ErrVMEnded = errors.New("the VM ended")

// messageOutputMax bounds how much of each stream an error message quotes:
// its end, where the reason usually is. The command log has more.
const messageOutputMax = 2048

// Error is a call on a VM that failed: the command did not end as the call
// wants, or could not run, or the wait ran out of time. Its message holds
// what a reader of a CI log needs: the VM, the call, the command's status
// and output, and the last console lines.
type Error struct {
	VM      string   // the VM's name
	Op      string   // the call, e.g. `succeed "systemctl start foo"`
	Problem string   // when the command ran but did not do what the call wants, e.g. "exit status 1, want 0"
	Result  *Result  // the command's result (of the last attempt, for waits); nil if none completed
	Err     error    // why the call failed otherwise: the context's end, the agent, the VM's end; nil with Problem
	Console []string // the last console lines when the call failed
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "VM %s: %s: ", e.VM, e.Op)
	switch {
	case e.Err != nil && e.Problem != "":
		fmt.Fprintf(&b, "%v; the last attempt: %s", e.Err, e.Problem)
	case e.Err != nil:
		fmt.Fprintf(&b, "%v", e.Err)
	default:
		b.WriteString(e.Problem)
	}
	if e.Result != nil {
		quoteStream(&b, "stdout", e.Result.Stdout)
		quoteStream(&b, "stderr", e.Result.Stderr)
	}
	if len(e.Console) == 0 {
		b.WriteString("\n  console: (nothing yet)")
	} else {
		fmt.Fprintf(&b, "\n  last %d console lines:", len(e.Console))
		for _, l := range e.Console {
			fmt.Fprintf(&b, "\n    | %s", l)
		}
	}
	return b.String()
}

func quoteStream(b *strings.Builder, name string, p []byte) {
	if len(p) == 0 {
		fmt.Fprintf(b, "\n  %s: (empty)", name)
		return
	}
	fmt.Fprintf(b, "\n  %s:", name)
	if len(p) > messageOutputMax {
		fmt.Fprintf(b, " [first %d bytes left out]", len(p)-messageOutputMax)
		p = p[len(p)-messageOutputMax:]
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(p), "\n"), "\n") {
		fmt.Fprintf(b, "\n    | %s", l)
	}
}

// newError makes the *Error of call op; res may be nil.
func (vm *VM) newError(op string, res *Result, err error) *Error {
	return &Error{VM: vm.Name(), Op: op, Result: res, Err: err, Console: vm.m.console.tail(consoleTailLines)}
}

// problem makes the *Error of a command that ran but did not satisfy op.
func (vm *VM) problem(op string, res Result, problem string) *Error {
	e := vm.newError(op, &res, nil)
	e.Problem = problem
	return e
}
