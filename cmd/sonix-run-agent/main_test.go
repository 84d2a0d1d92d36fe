package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/porttest"
	"github.com/sonix-run/sonix-run/agent/wire"
)

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for port, name := range map[string]string{"vport0p1": "org.qemu.guest_agent.0\n", "vport0p2": wire.PortName + "\n", "vport1p1": "other"} {
		d := filepath.Join(sys, "class", "virtio-ports", port)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "name"), []byte(name), 0o444)
	}
	os.MkdirAll(filepath.Join(sys, "class", "virtio-ports", "vport2p1"), 0o755) // no name file
	dev, ok := findPort(sys, "/dev", wire.PortName)
	if !ok || dev != "/dev/vport0p2" {
		t.Fatalf("found %q %v", dev, ok)
	}
	if _, ok := findPort(sys, "/dev", "org.sonix-run"); ok {
		t.Fatal("a prefix matched")
	}
	if _, ok := findPort(t.TempDir(), "/dev", wire.PortName); ok {
		t.Fatal("found a port without sysfs")
	}
	start := time.Now()
	_, err := waitForPort(context.Background(), t.TempDir(), "/dev", "x", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no virtio port named x") || time.Since(start) > 2*time.Second {
		t.Fatalf("waitForPort: %v after %v", err, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := waitForPort(ctx, t.TempDir(), "/dev", "x", time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("waitForPort after cancel: %v", err)
	}
}

func TestCommandPath(t *testing.T) {
	got := commandPath("/nix/store/x-busybox/bin:/usr/bin::/nix/store/x-busybox/bin")
	if !strings.HasSuffix(got, ":/bin:/nix/store/x-busybox/bin") || strings.Count(got, "/usr/bin:") != 1 {
		t.Fatalf("%q", got)
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"--version"}, exitOK, "sonix-run-agent "},
		{[]string{"--help"}, exitOK, "--wait-port"},
		{[]string{"--no-such-flag"}, exitUsage, "unknown flag"},
		{[]string{"extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"--wait-port", "-1s"}, exitUsage, "must not be negative"},
		{[]string{"--wait-port", "soon"}, exitUsage, "invalid argument"},
		{[]string{"--port", "no.such.port", "--wait-port", "0"}, exitNoPort, "no virtio port named no.such.port"},
	} {
		var out, errb bytes.Buffer
		if st := run(tc.args, &out, &errb); st != tc.status || !strings.Contains(out.String()+errb.String(), tc.out) {
			t.Errorf("%q: status %d, output %q %q; want %d and %q", tc.args, st, out.String(), errb.String(), tc.status, tc.out)
		}
	}
}

// syncBuffer is a Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentBinary builds the static agent and serves a Unix socket with
// it: two sessions one after the other (the agent comes back after the
// host hangs up), then SIGTERM.
func TestAgentBinary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs commands only on Linux")
	}
	bin := buildAgent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var stderr syncBuffer
	cmd := exec.Command(bin, "--device", sock)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 2; i++ {
		ln.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
		conn, err := ln.Accept()
		if err != nil {
			t.Fatalf("session %d: the agent did not connect: %v\n%s", i, err, stderr.String())
		}
		s := agent.NewLink(conn, agent.LinkOptions{})
		c := agent.NewClient(s.Dial)
		h, err := c.Hello(ctx)
		if err != nil {
			t.Fatalf("session %d: hello: %v", i, err)
		}
		if h.PID != cmd.Process.Pid || h.ProtocolVersion != wire.Version {
			t.Errorf("hello %+v", h)
		}
		var out bytes.Buffer
		st, err := c.Exec(ctx, agent.Command{Argv: []string{"echo", "session", string(rune('0' + i))}}, agent.Stdio{Stdout: &out})
		if err != nil || st != 0 || out.String() != "session "+string(rune('0'+i))+"\n" {
			t.Fatalf("session %d: exec: %d %v %q", i, st, err, out.String())
		}
		s.Close() // the host hangs up
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("after SIGTERM: %v", waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop on SIGTERM")
	}
	log := stderr.String()
	for _, want := range []string{"sonix-run-agent: serving " + sock, "sonix-run-agent: session ended: the host hung up", "sonix-run-agent: stopping"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if !strings.HasPrefix(line, "sonix-run-agent: ") {
			t.Errorf("log line without the prefix: %q", line)
		}
	}
}

// buildAgent builds the static agent once per test binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		t.Skipf("no go tool: %v", err)
	}
	builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sonix-run-agent-test")
		if err != nil {
			buildErr = err
			return
		}
		builtDir = dir
		built = filepath.Join(dir, "sonix-run-agent")
		build := exec.Command(goTool, "build", "-o", built, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

var (
	builtOnce       sync.Once
	built, builtDir string
	buildErr        error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// agentProcess is the agent binary serving a Unix socket.
type agentProcess struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
}

func startAgent(t *testing.T, bin, sock string) *agentProcess {
	t.Helper()
	a := &agentProcess{stderr: &syncBuffer{}, exited: make(chan struct{})}
	a.cmd = exec.Command(bin, "--device", sock)
	a.cmd.Stderr = a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.cmd.Wait()
		close(a.exited)
	}()
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.exited
	})
	return a
}

// TestAgentBinaryRestart: the agent binary is killed (SIGKILL) while a
// command runs and a new one starts, both on the same host link: as under
// QEMU, each agent's connection is spliced onto one port whose host side
// stays connected. The command fails with "restarted", the next one runs.
func TestAgentBinaryRestart(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs commands only on Linux")
	}
	bin := buildAgent(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hostConn, portConn := net.Pipe()
	port := porttest.New(portConn)
	defer port.Close()
	link := agent.NewLink(hostConn, agent.LinkOptions{})
	defer link.Close()
	c := agent.NewClient(link.Dial)

	// accept splices the next agent's connection onto the port, until
	// either side ends (the agent dies: the port closes).
	var splices sync.WaitGroup
	defer splices.Wait()
	accept := func(a *agentProcess) {
		t.Helper()
		ln.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
		conn, err := ln.Accept()
		if err != nil {
			t.Fatalf("the agent did not connect: %v\n%s", err, a.stderr)
		}
		end, err := port.Open()
		if err != nil {
			t.Fatal(err)
		}
		splices.Add(2)
		go func() {
			defer splices.Done()
			io.Copy(end, conn)
			end.Close()
			conn.Close()
		}()
		go func() {
			defer splices.Done()
			io.Copy(conn, end)
			end.Close()
			conn.Close()
		}()
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := startAgent(t, bin, sock)
	accept(first)
	if h, err := c.Hello(ctx); err != nil || h.PID != first.cmd.Process.Pid {
		t.Fatalf("hello: %+v %v\n%s", h, err, first.stderr)
	}
	// The command ends by itself once the agent's end of its stdin closes.
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	startedR, startedW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, agent.Command{Shell: "echo started; read x"}, agent.Stdio{Stdin: stdin, Stdout: startedW})
		startedW.Close()
		done <- err
	}()
	if _, err := io.ReadFull(startedR, make([]byte, len("started\n"))); err != nil {
		t.Fatalf("the command did not start: %v", err)
	}
	go io.Copy(io.Discard, startedR)
	first.cmd.Process.Kill()
	<-first.exited

	second := startAgent(t, bin, sock)
	accept(second)
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrAgentRestarted) {
			t.Fatalf("the command of the killed agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the command of the killed agent did not fail")
	}
	h, err := c.Hello(ctx)
	if err != nil || h.PID != second.cmd.Process.Pid {
		t.Fatalf("hello to the new agent: %+v %v\n%s", h, err, second.stderr)
	}
	var out bytes.Buffer
	if st, err := c.Exec(ctx, agent.Command{Argv: []string{"echo", "again"}}, agent.Stdio{Stdout: &out}); err != nil || st != 0 || out.String() != "again\n" {
		t.Fatalf("exec on the new agent: %d %v %q", st, err, out.String())
	}
	if err := link.Err(); err != nil {
		t.Fatalf("the link ended: %v", err)
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-second.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop on SIGTERM")
	}
}

// spliceAgents is a port imitation whose guest side each agent binary
// reaches through a Unix socket: accept splices the next agent's
// connection onto the port until either side ends (the agent dies: the
// port closes).
type spliceAgents struct {
	t       *testing.T
	ln      *net.UnixListener
	sock    string
	port    *porttest.Port
	link    *agent.Link
	splices sync.WaitGroup
}

func newSpliceAgents(t *testing.T) *spliceAgents {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hostConn, portConn := net.Pipe()
	s := &spliceAgents{t: t, ln: ln.(*net.UnixListener), sock: sock, port: porttest.New(portConn)}
	s.link = agent.NewLink(hostConn, agent.LinkOptions{})
	t.Cleanup(func() {
		s.link.Close()
		s.port.Close()
		ln.Close()
		s.splices.Wait()
	})
	return s
}

func (s *spliceAgents) accept(a *agentProcess) {
	s.t.Helper()
	s.ln.SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := s.ln.Accept()
	if err != nil {
		s.t.Fatalf("the agent did not connect: %v\n%s", err, a.stderr)
	}
	end, err := s.port.Open()
	if err != nil {
		s.t.Fatal(err)
	}
	s.splices.Add(2)
	go func() {
		defer s.splices.Done()
		io.Copy(end, conn)
		end.Close()
		conn.Close()
	}()
	go func() {
		defer s.splices.Done()
		io.Copy(conn, end)
		end.Close()
		conn.Close()
	}()
}

// TestAgentBinaryKilled: the agent binary is killed (SIGKILL) with a
// command running, and again with none, in a "VM" that goes on: with the
// port's close event (QEMU's VSERPORT_CHANGE), the command and every verb
// after it fail within 2 s saying that the agent's port closed, and the
// next agent is used as soon as it has opened the port.
func TestAgentBinaryKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs commands only on Linux")
	}
	bin := buildAgent(t)
	opened := make(chan struct{}, 8)
	s := newSpliceAgents(t)
	s.port.Notify(func(open bool) {
		s.link.PortOpen(open)
		if open {
			opened <- struct{}{}
		}
	})
	c := agent.NewClient(s.link.Dial)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, running := range []bool{true, false} {
		a := startAgent(t, bin, s.sock)
		s.accept(a)
		<-opened
		start := time.Now()
		if h, err := c.Hello(ctx); err != nil || h.PID != a.cmd.Process.Pid {
			t.Fatalf("hello: %+v %v\n%s", h, err, a.stderr)
		}
		t.Logf("the new agent answered after %v", time.Since(start))
		var done chan error
		if running {
			started := make(chan struct{})
			done = make(chan error, 1)
			go func() {
				_, err := c.Exec(ctx, agent.Command{Shell: "echo started; exec sleep 60"}, agent.Stdio{Stdout: writerFunc(func(p []byte) (int, error) {
					select {
					case <-started:
					default:
						close(started)
					}
					return len(p), nil
				})})
				done <- err
			}()
			<-started
		}
		a.cmd.Process.Kill()
		<-a.exited
		killed := time.Now()
		if running {
			select {
			case err := <-done:
				if !errors.Is(err, agent.ErrAgentGone) {
					t.Fatalf("the command of the killed agent: %v", err)
				}
				t.Logf("the command failed after %v: %v", time.Since(killed), err)
			case <-time.After(2 * time.Second):
				t.Fatal("the command of the killed agent did not fail within 2 s")
			}
		}
		for name, op := range map[string]func() error{
			"hello": func() error { _, err := c.Hello(ctx); return err },
			"exec": func() error {
				_, err := c.Exec(ctx, agent.Command{Argv: []string{"true"}}, agent.Stdio{})
				return err
			},
			"cp":       func() error { return c.CopyFrom(ctx, "/etc/hostname", t.TempDir()) },
			"poweroff": func() error { return c.PowerOff(ctx) },
		} {
			start := time.Now()
			err := op()
			if !errors.Is(err, agent.ErrAgentGone) || time.Since(start) > 2*time.Second {
				t.Errorf("%s after the kill: %v after %v; want ErrAgentGone within 2 s", name, err, time.Since(start))
			}
		}
	}
	// And the next one is used at once.
	a := startAgent(t, bin, s.sock)
	s.accept(a)
	<-opened
	var out bytes.Buffer
	if st, err := c.Exec(ctx, agent.Command{Argv: []string{"echo", "again"}}, agent.Stdio{Stdout: &out}); err != nil || st != 0 || out.String() != "again\n" {
		t.Fatalf("exec on the new agent: %d %v %q", st, err, out.String())
	}
	if err := s.link.Err(); err != nil {
		t.Fatalf("the link ended: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
