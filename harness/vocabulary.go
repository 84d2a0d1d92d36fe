package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/vmm"
)

// The polling of WaitUntil* and WaitFor{File,OpenPort,Unit}: the first
// retry comes after firstRetry, each later one after twice the wait
// before, at most maxRetry. Short first waits keep fast conditions fast;
// the cap keeps a long wait from missing its moment by much, and keeps a
// TCG guest from spending its time answering probes.
const (
	firstRetry = 50 * time.Millisecond
	maxRetry   = time.Second
)

// Succeed runs cmd (sh -c, as root) and returns its stdout; an exit status
// other than 0 is an *Error holding the status and output.
func (vm *VM) Succeed(ctx context.Context, cmd string) (string, error) {
	return vm.once(ctx, fmt.Sprintf("succeed %q", cmd), cmd, true)
}

// Fail runs cmd (sh -c, as root), which must exit with a status other than
// 0, and returns its stdout; status 0 is an *Error.
func (vm *VM) Fail(ctx context.Context, cmd string) (string, error) {
	return vm.once(ctx, fmt.Sprintf("fail %q", cmd), cmd, false)
}

func (vm *VM) once(ctx context.Context, op, cmd string, wantZero bool) (string, error) {
	res, err := vm.Run(ctx, cmd)
	if err != nil {
		return string(res.Stdout), vm.newError(op, resultIfAny(res), err)
	}
	if ok, problem := statusIs(res, wantZero); !ok {
		return string(res.Stdout), vm.problem(op, res, problem)
	}
	return string(res.Stdout), nil
}

func statusIs(res Result, wantZero bool) (bool, string) {
	switch {
	case wantZero && res.Status != 0:
		return false, fmt.Sprintf("exit status %d, want 0", res.Status)
	case !wantZero && res.Status == 0:
		return false, "exit status 0, want a failure"
	}
	return true, ""
}

// resultIfAny is res for an error message if the command got as far as
// printing something.
func resultIfAny(res Result) *Result {
	if len(res.Stdout) == 0 && len(res.Stderr) == 0 {
		return nil
	}
	return &res
}

// WaitUntilSucceeds runs cmd (sh -c) until it exits 0 and returns that
// run's stdout. It retries (see the package doc for the intervals) until
// ctx ends; the error then holds the last attempt's status and output.
func (vm *VM) WaitUntilSucceeds(ctx context.Context, cmd string) (string, error) {
	res, err := vm.poll(ctx, fmt.Sprintf("wait until succeeds %q", cmd), agent.Command{Shell: cmd},
		func(res Result) (bool, string, error) {
			ok, problem := statusIs(res, true)
			return ok, problem, nil
		})
	return string(res.Stdout), err
}

// WaitUntilFails runs cmd (sh -c) until it exits with a status other than
// 0 and returns that run's stdout; it retries like WaitUntilSucceeds.
func (vm *VM) WaitUntilFails(ctx context.Context, cmd string) (string, error) {
	res, err := vm.poll(ctx, fmt.Sprintf("wait until fails %q", cmd), agent.Command{Shell: cmd},
		func(res Result) (bool, string, error) {
			ok, problem := statusIs(res, false)
			return ok, problem, nil
		})
	return string(res.Stdout), err
}

// WaitForFile waits until path exists in the guest (test -e: a file,
// directory, socket, or a link to one).
func (vm *VM) WaitForFile(ctx context.Context, path string) error {
	_, err := vm.poll(ctx, fmt.Sprintf("wait for file %q", path), agent.Command{Argv: []string{"test", "-e", path}},
		func(res Result) (bool, string, error) {
			switch res.Status {
			case 0:
				return true, "", nil
			case 1:
				return false, "it does not exist", nil
			}
			return false, fmt.Sprintf("test -e exited %d", res.Status), nil
		})
	return err
}

// tcpTables prints the kernel's TCP socket tables; tcp6 is missing in a
// kernel without IPv6, which is no error.
const tcpTables = "cat /proc/net/tcp && { cat /proc/net/tcp6 2>/dev/null || true; }"

// WaitForOpenPort waits until a TCP socket listens on port in the guest, on
// any address. It reads the kernel's tables (/proc/net/tcp and tcp6), so it
// needs no tool in the guest beyond cat, and it connects to nothing (a
// server that handles one connection is not used up by the wait).
func (vm *VM) WaitForOpenPort(ctx context.Context, port int) error {
	op := fmt.Sprintf("wait for open port %d", port)
	if port < 1 || port > 65535 {
		return vm.newError(op, nil, fmt.Errorf("port %d: expected 1 to 65535", port))
	}
	_, err := vm.poll(ctx, op, agent.Command{Shell: tcpTables},
		func(res Result) (bool, string, error) {
			if res.Status != 0 {
				return false, fmt.Sprintf("reading /proc/net/tcp: exit status %d", res.Status), nil
			}
			if tcpListening(res.Stdout, port) {
				return true, "", nil
			}
			return false, fmt.Sprintf("no TCP socket listens on port %d (the tables, in hex, are stdout)", port), nil
		})
	return err
}

// WaitForUnit waits until the systemd unit is active (`systemctl
// is-active`). A unit that fails ends the wait with an error at once; an
// inactive one is waited for, since a timer, socket or another unit may
// start it. In a guest whose PID 1 is not systemd the error wraps
// ErrNoSystemd.
func (vm *VM) WaitForUnit(ctx context.Context, unit string) error {
	op := fmt.Sprintf("wait for unit %q", unit)
	if unit == "" || strings.ContainsAny(unit, "\x00\n") {
		return vm.newError(op, nil, fmt.Errorf("unit name %q: expected a unit such as nginx.service", unit))
	}
	hello, err := vm.agentHello(ctx)
	if err != nil {
		return vm.newError(op, nil, fmt.Errorf("asking the agent whether the guest runs systemd: %w", err))
	}
	if !hello.SystemdPID1 {
		return vm.newError(op, nil, ErrNoSystemd)
	}
	_, err = vm.poll(ctx, op, agent.Command{Argv: []string{"systemctl", "is-active", "--", unit}},
		func(res Result) (bool, string, error) {
			state := strings.TrimSpace(string(res.Stdout))
			switch {
			case res.Status == 0:
				return true, "", nil
			case state == "failed":
				return false, "", fmt.Errorf("unit %s failed (`systemctl status %s` or `journalctl -u %s` in the guest says why)", unit, unit, unit)
			case state == "":
				return false, fmt.Sprintf("systemctl is-active exited %d", res.Status), nil
			}
			return false, fmt.Sprintf("the unit is %s", state), nil
		})
	return err
}

// WaitForConsole waits until a console line matches re and returns it; it
// is WaitFor under the NixOS test driver's name.
func (vm *VM) WaitForConsole(ctx context.Context, re *regexp.Regexp) (string, error) {
	return vm.WaitFor(ctx, re)
}

// poll runs cmd until check says its result holds, check reports a fatal
// error, the command cannot run, the VM ends or ctx ends.
func (vm *VM) poll(ctx context.Context, op string, cmd agent.Command, check func(Result) (ok bool, problem string, fatal error)) (Result, error) {
	began := time.Now()
	delay := firstRetry
	var last Result
	var lastProblem string
	attempts := 0
	cutShort := false
	for {
		res, err := vm.exec(ctx, cmd)
		switch {
		case err != nil && ctx.Err() != nil:
			// Cut short by ctx: the previous attempt is the last whole one.
			cutShort = true
		case err != nil:
			return res, vm.newError(op, resultIfAny(res), err)
		default:
			attempts++
			ok, problem, fatal := check(res)
			if fatal != nil {
				return res, vm.newError(op, &res, fatal)
			}
			if ok {
				return res, nil
			}
			last, lastProblem = res, problem
		}
		var ended error
		if ctx.Err() == nil {
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
				delay = min(2*delay, maxRetry)
				continue
			case <-ctx.Done():
			case <-vm.m.inst.Done():
				ended = ErrVMEnded
			}
			timer.Stop()
		}
		if ended == nil {
			ended = fmt.Errorf("%w after %d attempts in %v", ctx.Err(), attempts, time.Since(began).Round(time.Millisecond))
			if cutShort {
				// A probe that hangs (a connection to a host that never
				// answers) eats the whole wait: say so.
				ended = fmt.Errorf("%w, the next one still running then (give the command a timeout of its own)", ended)
			}
		}
		var lastRes *Result
		if attempts > 0 {
			lastRes = &last
		}
		e := vm.newError(op, lastRes, ended)
		e.Problem = lastProblem
		return last, e
	}
}

// forwardAttempts bounds how often ForwardPort tries another free port
// when the one it picked was taken in between by someone else.
const forwardAttempts = 5

// ForwardPort forwards TCP port hostPort on the host's 127.0.0.1 to
// guestPort in the guest while the VM runs, and returns the host port. With
// hostPort 0 it picks a free port. It needs the user network (the default
// Config.Net).
func (vm *VM) ForwardPort(ctx context.Context, hostPort, guestPort int) (int, error) {
	op := fmt.Sprintf("forward host port %d to guest port %d", hostPort, guestPort)
	if hostPort < 0 || hostPort > 65535 || guestPort < 1 || guestPort > 65535 {
		return 0, vm.newError(op, nil, errors.New("expected a host port of 0 (any free port) to 65535 and a guest port of 1 to 65535"))
	}
	if vm.m.cfg.Net == vmm.NetNone {
		return 0, vm.newError(op, nil, errors.New("the VM has no user network (Config.Net is none): there is nothing to forward through"))
	}
	var err error
	for attempt := 0; attempt < forwardAttempts; attempt++ {
		port := hostPort
		if port == 0 {
			if port, err = freeTCPPort(); err != nil {
				return 0, vm.newError(op, nil, err)
			}
		}
		f := vmm.Forward{Proto: "tcp", HostPort: port, GuestPort: guestPort}
		e := vm.m.log.start("forward", f.String())
		err = vm.m.inst.AddForward(ctx, f)
		e.finish(0, err)
		if err == nil {
			return port, nil
		}
		if hostPort != 0 || ctx.Err() != nil {
			break
		}
	}
	return 0, vm.newError(op, nil, err)
}

// freeTCPPort returns a port that was free on 127.0.0.1 a moment ago.
// Another process may take it before QEMU binds it; ForwardPort then tries
// again.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free host port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
