package launcher

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
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/vmm"
)

// The control socket lets other sonix-run commands reach a running VM
// (exec, cp, shell, stop, list): one Unix socket in the run directory,
// private to the user like the directory (mode 0600 besides), and each
// side checks the other's uid before anything else: the server answers a
// peer of another uid (root included) with an error and nothing more, and
// the client sends nothing to a server of another uid. A connection
// starts with one
// JSON request line; for "agent" the connection then becomes one stream
// of the guest agent's protocol, spliced onto the VM's agent session, so
// `sonix-run exec` speaks to the guest exactly as the supervisor does.
const controlSocket = "ctl.sock"

// maxRequest bounds a control request line.
const maxRequest = 64 << 10

type controlRequest struct {
	Op      string       `json:"op"` // "agent", "stop", "info", "forward"
	Forward *vmm.Forward `json:"forward,omitempty"`
}

type controlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Owner *Owner `json:"owner,omitempty"`
}

type controlServer struct {
	inst   *Instance
	ctx    context.Context // ends when the server closes
	cancel context.CancelFunc
	l      net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func listenControl(i *Instance) (*controlServer, error) {
	path := filepath.Join(i.vm.RunDir, controlSocket)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// In a private directory already; 0600 whatever the umask.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlServer{inst: i, l: l, conns: map[net.Conn]bool{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.conns == nil { // closing
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// close stops accepting, ends every connection and waits for their goroutines.
func (s *controlServer) close(ctx context.Context) error {
	s.cancel()
	s.l.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("control connections did not end")
	}
}

func (s *controlServer) handle(c net.Conn) {
	if err := checkPeer(c); err != nil {
		writeReply(c, controlReply{Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReaderSize(io.LimitReader(c, maxRequest), 4096)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		writeReply(c, controlReply{Error: "malformed request"})
		return
	}
	i := s.inst
	switch req.Op {
	case "info":
		o, err := readOwner(i.vm.RunDir)
		if err != nil {
			writeReply(c, controlReply{Error: err.Error()})
			return
		}
		writeReply(c, controlReply{OK: true, Owner: &o})
	case "stop":
		writeReply(c, controlReply{OK: true})
		i.requestStop(stopRequest{why: fail(Interrupted, "stopped with `sonix-run stop`"), graceful: true})
		// The connection stays open until the run ends: the client waits on it.
		io.Copy(io.Discard, c)
	case "forward":
		if req.Forward == nil {
			writeReply(c, controlReply{Error: "forward: no forward given"})
			return
		}
		f, err := vmm.ParseForward(req.Forward.String()) // the same checks as --forward
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = i.AddForward(ctx, f)
			cancel()
		}
		if err != nil {
			writeReply(c, controlReply{Error: err.Error()})
			return
		}
		writeReply(c, controlReply{OK: true})
	case "agent":
		if i.link == nil {
			writeReply(c, controlReply{Error: "the VM was started without its agent's port"})
			return
		}
		if err := i.waitGuestReady(s.ctx); err != nil {
			writeReply(c, controlReply{Error: err.Error()})
			return
		}
		// Bounded by the VM's life: the agent may still be booting.
		stream, err := i.link.Dial(s.ctx)
		if err != nil {
			writeReply(c, controlReply{Error: err.Error()})
			return
		}
		if err := writeReply(c, controlReply{OK: true}); err != nil {
			stream.Close()
			return
		}
		splice(c, r, stream)
	default:
		writeReply(c, controlReply{Error: fmt.Sprintf("unknown request %q", req.Op)})
	}
}

// splice copies both ways until either side ends, then closes both.
func splice(c net.Conn, fromClient io.Reader, stream net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(stream, io.MultiReader(fromClient, c)); done <- struct{}{} }()
	go func() { io.Copy(c, stream); done <- struct{}{} }()
	<-done
	c.Close()
	stream.Close()
	<-done
}

// checkPeer refuses a control connection from another uid than the one
// this run has (root too, unless this run is root's).
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

// dialControl connects to the control socket at path, which must be a
// socket of the user's, served by a process of the user's: nothing is
// sent before both are checked.
func dialControl(ctx context.Context, path string) (net.Conn, error) {
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

func writeReply(w io.Writer, r controlReply) error {
	b, _ := json.Marshal(r)
	_, err := w.Write(append(b, '\n'))
	return err
}

// Remote is a running VM reached through its control socket.
type Remote struct {
	Owner Owner
}

// Connect finds the running VM called name.
func Connect(name string) (*Remote, error) {
	o, err := find(name)
	if err != nil {
		return nil, err
	}
	return &Remote{Owner: o}, nil
}

// dial opens a control connection and sends req.
func (r *Remote) dial(ctx context.Context, req controlRequest) (net.Conn, *bufio.Reader, error) {
	c, err := dialControl(ctx, filepath.Join(r.Owner.Dir, controlSocket))
	if err != nil {
		return nil, nil, fmt.Errorf("VM %q: %w", r.Owner.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("VM %q: %w", r.Owner.Name, err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("VM %q: %w", r.Owner.Name, ctx.Err())
		}
		return nil, nil, fmt.Errorf("VM %q: the control socket hung up (the VM is ending?)", r.Owner.Name)
	}
	var rep controlReply
	if err := json.Unmarshal(line, &rep); err != nil || !rep.OK {
		c.Close()
		if rep.Error == "" {
			rep.Error = "malformed reply"
		}
		return nil, nil, fmt.Errorf("VM %q: %s", r.Owner.Name, rep.Error)
	}
	return c, br, nil
}

// Agent is a client of the VM's guest agent, each stream through the
// control socket.
func (r *Remote) Agent() *agent.Client {
	return agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		c, br, err := r.dial(ctx, controlRequest{Op: "agent"})
		if err != nil {
			return nil, err
		}
		return &bufferedConn{Conn: c, r: br}, nil
	})
}

// Forward forwards host port f.HostPort on 127.0.0.1 to the guest's
// f.GuestPort while the VM runs.
func (r *Remote) Forward(ctx context.Context, f vmm.Forward) error {
	c, _, err := r.dial(ctx, controlRequest{Op: "forward", Forward: &f})
	if err != nil {
		return err
	}
	return c.Close()
}

// Stop presses the VM's power button; its supervisor stops it after its
// --stop-timeout. Stop returns once the run has ended, or when ctx ends.
func (r *Remote) Stop(ctx context.Context) error {
	c, br, err := r.dial(ctx, controlRequest{Op: "stop"})
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	io.Copy(io.Discard, br) // the supervisor hangs up when the run has ended
	if ctx.Err() != nil {
		return fmt.Errorf("VM %q has not ended: %w", r.Owner.Name, ctx.Err())
	}
	return nil
}

// bufferedConn is a conn whose first bytes were read ahead into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
