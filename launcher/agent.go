package launcher

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The agent's ports (docs/harness.md).
const (
	PortCtl    = "org.sonix-run.ctl"
	PortStdout = "org.sonix-run.stdout"
	PortStderr = "org.sonix-run.stderr"
	PortStdin  = "org.sonix-run.stdin"
)

// AgentPorts are the ports a VM gets when its agent is wanted.
var AgentPorts = []string{PortCtl, PortStdout, PortStderr, PortStdin}

// ErrVMEnded means the VM ended before the agent answered.
var ErrVMEnded = errors.New("the VM ended")

// Agent talks to the guest's agent: it runs commands and returns their
// output and exit status.
type Agent struct {
	inst   *Instance
	dialer PortDialer
	nonce  string

	mu     sync.Mutex // one command at a time
	nextID int
	ctl    io.ReadWriteCloser
	stdout *markedStream
	stderr *markedStream
	stdin  io.ReadWriteCloser // connected, ready for the next command that reads it

	ready chan struct{} // closed at "ready"
	exits chan exitLine
}

type exitLine struct {
	id, status int
}

// Agent connects to the guest agent's ports (the VM must have been started
// with Config.Agent or Config.Command).
func (i *Instance) Agent(ctx context.Context) (*Agent, error) {
	i.agentOnce.Do(func() { i.agent, i.agentErr = i.connectAgent(ctx) })
	return i.agent, i.agentErr
}

func (i *Instance) connectAgent(ctx context.Context) (*Agent, error) {
	d, ok := i.r.machine.(PortDialer)
	if !ok || len(i.r.vm.Ports) == 0 {
		return nil, fmt.Errorf("the %s backend has no agent ports", i.r.backend.Name())
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	a := &Agent{inst: i, dialer: d, nonce: hex.EncodeToString(nonce), ready: make(chan struct{}), exits: make(chan exitLine, 1)}
	var err error
	open := func(name string) io.ReadWriteCloser {
		if err != nil {
			return nil
		}
		var c io.ReadWriteCloser
		c, err = d.DialPort(ctx, name)
		return c
	}
	a.ctl = open(PortCtl)
	out, errp := open(PortStdout), open(PortStderr)
	if err != nil {
		for _, c := range []io.Closer{a.ctl, out, errp} {
			if c != nil {
				c.Close()
			}
		}
		return nil, fmt.Errorf("connecting to the agent's ports: %w", err)
	}
	a.stdout, a.stderr = newMarkedStream(out), newMarkedStream(errp)
	// The stdin port is connected ahead of need: the guest reads a port
	// that the host has not connected yet as EOF.
	if a.stdin, err = d.DialPort(ctx, PortStdin); err != nil {
		a.Close()
		return nil, fmt.Errorf("connecting to the agent's ports: %w", err)
	}
	go a.readCtl()
	return a, nil
}

// readCtl reads the guest's lines on the control port.
func (a *Agent) readCtl() {
	sc := bufio.NewScanner(a.ctl)
	readyOnce := sync.Once{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "ready" && f[1] == "1":
			readyOnce.Do(func() { close(a.ready) })
		case len(f) == 4 && f[0] == "exit" && f[1] == a.nonce:
			id, err1 := strconv.Atoi(f[2])
			st, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				a.exits <- exitLine{id, st}
			}
		}
		// Anything else, a forged exit line without the nonce included, is ignored.
	}
}

// WaitReady waits until the guest's agent is up.
func (a *Agent) WaitReady(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-a.inst.done:
		return ErrVMEnded
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs cmd in the guest as root with sh -c, streaming its stdout and
// stderr to the writers as they come, and returns its exit status. stdin,
// if not nil, is its standard input until EOF; else it reads /dev/null.
func (a *Agent) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if err := a.WaitReady(ctx); err != nil {
		return -1, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextID++
	id := a.nextID
	mode := "null"
	if stdin != nil {
		mode = "port"
		conn := a.stdin
		mark := a.dialer.PortMark()
		// Closing the connection is the guest's EOF, once the guest has the
		// port open (before, QEMU would drop what was sent). The next
		// command that reads stdin gets a new connection, made once this
		// one has ended: made earlier, it would hide the hangup.
		go func() {
			io.Copy(conn, stdin)
			if a.dialer.WaitPortOpen(ctx, PortStdin, mark) == nil {
				conn.Close()
			}
		}()
		defer func() {
			conn.Close()
			a.stdin, _ = a.dialer.DialPort(context.Background(), PortStdin)
		}()
	}
	req := fmt.Sprintf("run %s %d %s %s\n", a.nonce, id, mode, base64.StdEncoding.EncodeToString([]byte(cmd)))
	if _, err := io.WriteString(a.ctl, req); err != nil {
		return -1, fmt.Errorf("sending the command: %w", err)
	}
	marker := []byte(fmt.Sprintf("\x00sonix-end %s %d\n", a.nonce, id))
	outDone, errDone := make(chan error, 1), make(chan error, 1)
	go func() { outDone <- a.stdout.copyUntil(stdout, marker) }()
	go func() { errDone <- a.stderr.copyUntil(stderr, marker) }()
	status := -1
	for outDone != nil || errDone != nil || status < 0 {
		select {
		case err := <-outDone:
			if err != nil {
				return -1, a.streamEnded(ctx, "stdout", err)
			}
			outDone = nil
		case err := <-errDone:
			if err != nil {
				return -1, a.streamEnded(ctx, "stderr", err)
			}
			errDone = nil
		case e := <-a.exits:
			if e.id == id {
				status = e.status
			}
		case <-a.inst.done:
			return -1, ErrVMEnded
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
	return status, nil
}

// streamEnded explains a port that closed under a command: QEMU closes
// them when it exits, so it is the VM ending unless it goes on.
func (a *Agent) streamEnded(ctx context.Context, which string, err error) error {
	select {
	case <-a.inst.done:
		return ErrVMEnded
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return fmt.Errorf("reading the command's %s: %w", which, err)
	}
}

// PowerOff asks the agent to power the guest off.
func (a *Agent) PowerOff() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := io.WriteString(a.ctl, "poweroff\n")
	return err
}

// Close closes the ports.
func (a *Agent) Close() error {
	a.ctl.Close()
	a.stdout.Close()
	a.stderr.Close()
	if a.stdin != nil {
		a.stdin.Close()
	}
	return nil
}

// markedStream is a port whose data is a sequence of outputs, each ended
// by a marker line.
type markedStream struct {
	r       io.ReadCloser
	pending []byte // read but not yet given to a command's output
}

func newMarkedStream(r io.ReadCloser) *markedStream { return &markedStream{r: r} }

func (m *markedStream) Close() error { return m.r.Close() }

// copyUntil writes everything before marker to w as it arrives, holding
// back only what could be the start of the marker.
func (m *markedStream) copyUntil(w io.Writer, marker []byte) error {
	if w == nil {
		w = io.Discard
	}
	buf := make([]byte, 32*1024)
	for {
		if i := bytes.Index(m.pending, marker); i >= 0 {
			w.Write(m.pending[:i])
			m.pending = append(m.pending[:0], m.pending[i+len(marker):]...)
			return nil
		}
		keep := partialMarker(m.pending, marker)
		if flush := len(m.pending) - keep; flush > 0 {
			w.Write(m.pending[:flush])
			m.pending = append(m.pending[:0], m.pending[flush:]...)
		}
		n, err := m.r.Read(buf)
		m.pending = append(m.pending, buf[:n]...)
		if err != nil && n == 0 {
			return err
		}
	}
}

// partialMarker is how many bytes at the end of b could begin marker.
func partialMarker(b, marker []byte) int {
	for k := min(len(b), len(marker)-1); k > 0; k-- {
		if bytes.Equal(b[len(b)-k:], marker[:k]) {
			return k
		}
	}
	return 0
}
