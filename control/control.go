// Package control is the protocol of a run's control socket, which lets
// other sonix-run commands reach a running VM (exec, cp, shell, forward,
// stop, list): its requests and replies, the checks both ends make of the
// other, and the client the verbs use. The server is the run itself
// (package launcher).
//
// A connection starts with one JSON request line and gets one JSON reply
// line; for "agent" the connection then becomes one stream of the guest
// agent's protocol (docs/protocol.md), spliced onto the VM's agent session,
// so `sonix-run exec` speaks to the guest exactly as the supervisor does.
// The socket is 0600 in a private run directory (package rundir), and each
// end checks that the other runs as the same user.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

// The requests.
const (
	OpInfo    = "info"    // the run's owner file
	OpStop    = "stop"    // press the power button; the reply comes at once, the hangup when the run has ended
	OpForward = "forward" // forward a host port to the guest from now on
	OpAgent   = "agent"   // the connection becomes a stream of the guest agent
)

// MaxRequest bounds a request line.
const MaxRequest = 64 << 10

// Request is the first line a client sends.
type Request struct {
	Op      string       `json:"op"`
	Forward *vmm.Forward `json:"forward,omitempty"`
}

// Reply is the server's answer to a Request.
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Session, with Error, says that there is no session with the guest
	// agent to serve the request, and how the last one ended (a
	// wire.Session value, agent.SessionEndOf).
	Session string        `json:"session,omitempty"`
	Owner   *rundir.Owner `json:"owner,omitempty"`
}

// Listen listens on path, 0600 whatever the umask (in a private run
// directory already).
func Listen(path string) (net.Listener, error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return l, nil
}

// ReadRequest checks who connected (the same uid as this process, root
// included only when this process is root's) and reads the request line
// within timeout. The reader gives all that the client sends after the
// line: what was read ahead, then the connection's.
func ReadRequest(c net.Conn, timeout time.Duration) (Request, io.Reader, error) {
	var req Request
	if err := checkPeer(c); err != nil {
		return req, nil, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	r := bufio.NewReaderSize(io.LimitReader(c, MaxRequest), 4096)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return req, nil, fmt.Errorf("reading the request: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	if err := json.Unmarshal(line, &req); err != nil {
		return req, nil, errors.New("malformed request")
	}
	// r reads only up to MaxRequest bytes of c: the rest comes from c.
	return req, io.MultiReader(r, c), nil
}

// WriteReply writes one reply line.
func WriteReply(w io.Writer, r Reply) error {
	b, _ := json.Marshal(r)
	_, err := w.Write(append(b, '\n'))
	return err
}

// checkPeer refuses a control connection from another uid than this
// process's (root too, unless this process is root's).
func checkPeer(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("refused: not a Unix socket connection")
	}
	uid, err := peerUID(uc)
	if err != nil {
		return fmt.Errorf("refused: cannot tell who connected: %v", err)
	}
	if me := os.Geteuid(); uid != me {
		return fmt.Errorf("refused: this VM's control socket serves uid %d only, not uid %d", me, uid)
	}
	return nil
}

// dial connects to the control socket at path, which must be a socket of
// the user's, served by a process of the user's: nothing is sent before
// both are checked.
func dial(ctx context.Context, path string) (net.Conn, error) {
	me := os.Geteuid()
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); fi.Mode().Type() != fs.ModeSocket || !ok || int(st.Uid) != me {
		return nil, fmt.Errorf("refused: %s is not a socket of yours (mode %v)", path, fi.Mode())
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uid, err := peerUID(c.(*net.UnixConn))
	if err == nil && uid != me {
		err = fmt.Errorf("refused: %s is served by uid %d, not by you (uid %d)", path, uid, me)
	} else if err != nil {
		err = fmt.Errorf("refused: cannot tell who serves %s: %v", path, err)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// VM is a running VM reached through its control socket.
type VM struct {
	Owner rundir.Owner
}

// Connect finds the running VM called name (rundir.ErrNotRunning when
// there is none, rundir.ErrBadName for a name that cannot be one).
func Connect(name string) (*VM, error) {
	o, err := rundir.Find(name)
	if err != nil {
		return nil, err
	}
	return &VM{Owner: o}, nil
}

// startWait bounds how long a client waits for the control socket of a VM
// whose run directory exists: the run makes its socket once the VM runs.
const startWait = 5 * time.Minute

// dial opens a control connection and sends req. A VM that is still
// starting (its socket not made yet) is waited for, while its run lives.
func (v *VM) dial(ctx context.Context, req Request) (net.Conn, *bufio.Reader, error) {
	path := rundir.ControlSocket(v.Owner.Dir)
	c, err := dial(ctx, path)
	for wait := 10 * time.Millisecond; errors.Is(err, fs.ErrNotExist) && v.Owner.Alive(); wait = min(2*wait, 200*time.Millisecond) {
		if time.Since(v.Owner.Started) > startWait {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("VM %q: %w", v.Owner.Name, ctx.Err())
		case <-time.After(wait):
		}
		c, err = dial(ctx, path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !v.Owner.Alive() {
			return nil, nil, fmt.Errorf("%w: VM %q has ended", rundir.ErrNotRunning, v.Owner.Name)
		}
		return nil, nil, fmt.Errorf("VM %q: %w", v.Owner.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("VM %q: %w", v.Owner.Name, err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("VM %q: %w", v.Owner.Name, ctx.Err())
		}
		return nil, nil, fmt.Errorf("VM %q: the control socket hung up (the VM is ending?)", v.Owner.Name)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil || !rep.OK {
		c.Close()
		if rep.Error == "" {
			rep.Error = "malformed reply"
		}
		if rep.Session != "" {
			return nil, nil, fmt.Errorf("VM %q: %w", v.Owner.Name, agent.SessionEnded(rep.Session, rep.Error))
		}
		return nil, nil, fmt.Errorf("VM %q: %s", v.Owner.Name, rep.Error)
	}
	return c, br, nil
}

// Agent is a client of the VM's guest agent, each stream through the
// control socket.
func (v *VM) Agent() *agent.Client {
	return agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		c, br, err := v.dial(ctx, Request{Op: OpAgent})
		if err != nil {
			return nil, err
		}
		return &bufferedConn{Conn: c, r: br}, nil
	})
}

// Forward forwards host port f.HostPort on 127.0.0.1 to the guest's
// f.GuestPort while the VM runs.
func (v *VM) Forward(ctx context.Context, f vmm.Forward) error {
	c, _, err := v.dial(ctx, Request{Op: OpForward, Forward: &f})
	if err != nil {
		return err
	}
	return c.Close()
}

// Stop presses the VM's power button; its supervisor stops it after its
// --stop-timeout. Stop returns once the run has ended, or when ctx ends.
func (v *VM) Stop(ctx context.Context) error {
	c, br, err := v.dial(ctx, Request{Op: OpStop})
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	io.Copy(io.Discard, br) // the supervisor hangs up when the run has ended
	if ctx.Err() != nil {
		return fmt.Errorf("VM %q has not ended: %w", v.Owner.Name, ctx.Err())
	}
	return nil
}

// bufferedConn is a conn whose first bytes were read ahead into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
