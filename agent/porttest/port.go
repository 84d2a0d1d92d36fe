// Package porttest imitates a virtio console port for tests of the agent's
// transport: one connection on the host's side that stays up, and guest
// ends that come and go as agents open and close the port.
//
// It behaves as QEMU does: what the host writes while no agent has the
// port open waits (QEMU does not read the host's socket then) and reaches
// the next agent to open it; an agent closing the port is no end of file
// for the host, only an event (Notify, as QEMU's VSERPORT_CHANGE); one
// write of the guest (of at most 64 KiB) reaches the host whole, as a port
// write of at most 32 KiB does.
package porttest

import (
	"errors"
	"net"
	"sync"
)

// Port splices a host connection to the guest end that is open.
type Port struct {
	host net.Conn

	mu      sync.Mutex
	guest   net.Conn      // the port's side of the open guest end; nil while closed
	opened  chan struct{} // closed and replaced when a guest end opens
	pumping chan struct{} // closed when the open end's guest-to-host pump is done
	frozen  chan struct{} // non-nil while frozen: closed by Thaw
	closed  bool
	carried int // bytes of the host's that an end did not take, kept for the next
	notify  func(open bool)
	wg      sync.WaitGroup
}

// Notify has f called when an agent opens the port (true) and when it
// closes it (false), as QEMU emits VSERPORT_CHANGE: the close once what
// that agent wrote has been passed to the host. f is called without the
// port's lock held, one call at a time per end.
func (p *Port) Notify(f func(open bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = f
}

// ErrClosed is Open's error after Close.
var ErrClosed = errors.New("porttest: the port is closed")

// New serves host, the port's side of the host's connection (the other
// side is what the host code reads and writes).
func New(host net.Conn) *Port {
	p := &Port{host: host, opened: make(chan struct{})}
	done := make(chan struct{})
	close(done)
	p.pumping = done
	p.wg.Add(1)
	go p.pumpToGuest()
	return p
}

// Open opens the port from the guest and returns the agent's end; closing
// that end closes the port. It waits until the previous end's last bytes
// have reached the host.
func (p *Port) Open() (net.Conn, error) {
	p.mu.Lock()
	prev := p.pumping
	p.mu.Unlock()
	<-prev
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.guest != nil {
		return nil, errors.New("porttest: the port is already open") // as the driver says EBUSY
	}
	agentEnd, portEnd := net.Pipe()
	p.guest = portEnd
	close(p.opened)
	p.opened = make(chan struct{})
	pumping := make(chan struct{})
	p.pumping = pumping
	if p.notify != nil {
		p.notify(true)
	}
	p.wg.Add(1)
	go p.pumpToHost(portEnd, pumping)
	return agentEnd, nil
}

// Carried is how many bytes the host wrote that an agent closed the port
// without reading, and that went to the next agent instead.
func (p *Port) Carried() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.carried
}

// Freeze stops passing what the guest writes to the host, as a guest that
// stalls; Thaw passes it again.
func (p *Port) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// Thaw ends Freeze.
func (p *Port) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// Close closes the host's connection and the open guest end, and waits
// for the port's goroutines.
func (p *Port) Close() error {
	p.mu.Lock()
	p.closed = true
	if p.guest != nil {
		p.guest.Close()
	}
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
	close(p.opened)
	p.opened = make(chan struct{})
	p.mu.Unlock()
	err := p.host.Close()
	p.wg.Wait()
	return err
}

// closeGuest closes the port if g is still its open end.
func (p *Port) closeGuest(g net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.guest == g {
		p.guest = nil
	}
	g.Close()
}

// closed tells Notify that g's agent closed the port, once its last
// bytes have been passed on.
func (p *Port) closedEnd(g net.Conn) {
	p.closeGuest(g)
	p.mu.Lock()
	f, closed := p.notify, p.closed
	p.mu.Unlock()
	if f != nil && !closed {
		f(false)
	}
}

// pumpToGuest passes the host's bytes to the open end; while the port is
// closed they wait.
func (p *Port) pumpToGuest() {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := p.host.Read(buf)
		data := buf[:n]
		p.mu.Lock()
		readBy := p.guest // the end open when the host's bytes came
		p.mu.Unlock()
		for len(data) > 0 {
			p.mu.Lock()
			g, opened, closed := p.guest, p.opened, p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if g == nil {
				<-opened
				continue
			}
			if g != readBy {
				p.mu.Lock()
				p.carried += len(data)
				p.mu.Unlock()
			}
			m, werr := g.Write(data)
			data = data[m:]
			if werr != nil {
				p.closeGuest(g) // the agent closed the port: the rest waits for the next
			}
		}
		if err != nil {
			return
		}
	}
}

// pumpToHost passes one guest end's writes to the host until the agent
// closes it.
func (p *Port) pumpToHost(g net.Conn, done chan struct{}) {
	defer p.wg.Done()
	defer close(done)
	defer p.closedEnd(g)
	// Larger than any one write of the agent, so that each reaches the
	// host whole.
	buf := make([]byte, 64<<10)
	for {
		n, err := g.Read(buf)
		if n > 0 {
			p.mu.Lock()
			frozen := p.frozen
			p.mu.Unlock()
			if frozen != nil {
				<-frozen
			}
			if _, werr := p.host.Write(buf[:n]); werr != nil {
				p.closeGuest(g)
				return
			}
		}
		if err != nil { // the agent closed the port
			p.closeGuest(g)
			return
		}
	}
}
