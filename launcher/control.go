package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/control"
	"github.com/sonix-run/sonix-run/rundir"
)

// controlServer serves the run's control socket (package control: the
// protocol, its checks and the client the verbs use).
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
	l, err := control.Listen(rundir.ControlSocket(i.vm.RunDir))
	if err != nil {
		return nil, err
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
	req, r, err := control.ReadRequest(c, 5*time.Second)
	if err != nil {
		control.WriteReply(c, control.Reply{Error: err.Error()})
		return
	}
	i := s.inst
	switch req.Op {
	case control.OpInfo:
		o, err := rundir.Find(i.vm.Name)
		if err != nil {
			control.WriteReply(c, control.Reply{Error: err.Error()})
			return
		}
		control.WriteReply(c, control.Reply{OK: true, Owner: &o})
	case control.OpStop:
		control.WriteReply(c, control.Reply{OK: true})
		i.requestStop(stopRequest{why: fail(Interrupted, "stopped with `sonix-run stop`"), graceful: true})
		// The connection stays open until the run ends: the client waits on it.
		io.Copy(io.Discard, c)
	case control.OpForward:
		if req.Forward == nil {
			control.WriteReply(c, control.Reply{Error: "forward: no forward given"})
			return
		}
		f := *req.Forward
		err := f.Validate() // the same checks as --forward
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = i.AddForward(ctx, f)
			cancel()
		}
		if err != nil {
			control.WriteReply(c, control.Reply{Error: err.Error()})
			return
		}
		control.WriteReply(c, control.Reply{OK: true})
	case control.OpAgent:
		if i.link == nil {
			control.WriteReply(c, control.Reply{Error: "the VM was started without its agent's port"})
			return
		}
		if err := i.waitGuestReady(s.ctx); err != nil {
			control.WriteReply(c, control.Reply{Error: err.Error()})
			return
		}
		// Bounded by the VM's life: the agent may still be booting.
		stream, err := i.link.Dial(s.ctx)
		if err != nil {
			control.WriteReply(c, control.Reply{Error: err.Error(), Session: agent.SessionEndOf(err)})
			return
		}
		if err := control.WriteReply(c, control.Reply{OK: true}); err != nil {
			stream.Close()
			return
		}
		agent.Proxy(&readAhead{c, r}, stream)
	default:
		control.WriteReply(c, control.Reply{Error: fmt.Sprintf("unknown request %q", req.Op)})
	}
}

// readAhead is a connection read through r (control.ReadRequest's).
type readAhead struct {
	net.Conn
	r io.Reader
}

func (c *readAhead) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection: agent.Proxy passes the guest's
// end of a stream on so.
func (c *readAhead) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
