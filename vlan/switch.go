package vlan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the switch. A port's queue bounds what a VM that stops reading
// (paused, hung, or slow under TCG) can cost: once full, frames for that port
// are dropped, as a real switch drops them, and the other ports go on.
const (
	queueFrames     = 256
	queueBytes      = 1 << 20
	fdbSize         = 4096 // learned addresses; beyond it the switch floods
	fdbMaxAge       = 5 * time.Minute
	controlDeadline = 10 * time.Second // for a control client to send its request
	// DefaultGrace is how long a switch with no ports waits before it
	// exits: long enough for a VM that restarts to rejoin the same switch.
	DefaultGrace = 2 * time.Second
)

// lanPaths are the files of one LAN under the per-user directory.
type lanPaths struct{ base, lan string }

func (p lanPaths) lock() string    { return filepath.Join(p.base, p.lan+".lock") }
func (p lanPaths) dir() string     { return filepath.Join(p.base, p.lan) }
func (p lanPaths) control() string { return filepath.Join(p.dir(), "control.sock") }
func (p lanPaths) port(id int) string {
	return filepath.Join(p.dir(), fmt.Sprintf("port-%d.sock", id))
}

// switchServer is one LAN's Ethernet switch. It owns every goroutine it
// starts; run returns after all of them have ended.
type switchServer struct {
	paths      lanPaths
	grace      time.Duration
	ctlTimeout time.Duration
	ctl        *net.UnixListener

	kick chan struct{} // the number of ports changed

	// onLink, if set (tests), learns that a port's QEMU connection came up
	// or went down; called with mu held, it must not block.
	onLink func(id int, up bool)
	// onFrame, if set (tests), learns that a frame from a port was handled.
	onFrame func(id int)

	mu      sync.Mutex
	closing bool
	nextID  int
	ports   map[int]*port
	byMAC   map[[6]byte]*port
	fdb     map[[6]byte]fdbEntry
	conns   map[net.Conn]struct{} // open control connections

	wg sync.WaitGroup
}

type fdbEntry struct {
	port *port
	seen time.Time
}

// port is a reservation made by "join": a socket QEMU connects to, and at
// most one connection (link) at a time.
type port struct {
	id  int
	vm  string
	mac [6]byte
	ln  *net.UnixListener

	blocked                 atomic.Bool
	received, sent, dropped atomic.Uint64
	link                    *link  // guarded by switchServer.mu
	lastErr                 string // guarded by switchServer.mu
	removed                 bool   // guarded by switchServer.mu
}

// link is one QEMU connection to a port.
type link struct {
	conn   net.Conn
	out    chan []byte // closed by the reader, under switchServer.mu
	queued atomic.Int64

	closeOnce sync.Once
	cause     error // why it was closed; nil when the switch closed it on purpose
}

func (l *link) closeWith(cause error) {
	l.closeOnce.Do(func() {
		l.cause = cause
		l.conn.Close()
	})
}

func newSwitch(paths lanPaths, grace time.Duration, ctl *net.UnixListener) *switchServer {
	if grace <= 0 {
		grace = DefaultGrace
	}
	return &switchServer{
		paths:      paths,
		grace:      grace,
		ctlTimeout: controlDeadline,
		ctl:        ctl,
		kick:       make(chan struct{}, 1),
		ports:      map[int]*port{},
		byMAC:      map[[6]byte]*port{},
		fdb:        map[[6]byte]fdbEntry{},
		conns:      map[net.Conn]struct{}{},
	}
}

// run serves until the switch has had no port for its grace period, or ctx
// ends; either way it removes the LAN's files (under the LAN's lock, so that a
// joiner never sees half of them) and waits for its goroutines.
func (s *switchServer) run(ctx context.Context) error {
	s.wg.Add(1)
	go s.acceptControl()
	idle := time.NewTimer(s.grace) // the starter joins at once
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			// Exiting anyway: take the lock if it comes soon, so as not to
			// remove files a new switch has just made.
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			lk, err := lockLAN(lctx, s.paths)
			cancel()
			s.stop(lk)
			if err != nil {
				return fmt.Errorf("vlan %q: stopped without removing its files: %w", s.paths.lan, err)
			}
			return nil
		case <-s.kick:
			s.mu.Lock()
			n := len(s.ports)
			s.mu.Unlock()
			idle.Stop()
			if n == 0 {
				idle.Reset(s.grace)
			}
		case <-idle.C:
			// Joiners hold the lock from their check for a switch to the
			// end of their join, so once we hold it no join is half done.
			lk, err := lockLAN(ctx, s.paths)
			switch {
			case ctx.Err() != nil:
				continue // handled above
			case errors.Is(err, fs.ErrNotExist):
				// Someone removed our directory: nothing left to clean.
				s.stop(nil)
				return fmt.Errorf("vlan %q: its directory vanished: %w", s.paths.lan, err)
			case err != nil:
				idle.Reset(s.grace) // try again; never linger for good
				continue
			}
			s.mu.Lock()
			busy := len(s.ports) > 0
			if !busy {
				s.closing = true
			}
			s.mu.Unlock()
			if busy {
				lk.unlock()
				continue
			}
			s.stop(lk)
			return nil
		}
	}
}

// stop closes everything and waits for the goroutines; with lk (the LAN's
// lock) it then removes the LAN's files, the lock file last, and the
// per-user directory if that is now empty. Nothing is closed after the lock
// is released: a closing listener unlinks its path, which by then could be a
// new switch's.
func (s *switchServer) stop(lk *lanLock) {
	s.mu.Lock()
	s.closing = true
	var links []*link
	var listeners []*net.UnixListener
	for _, p := range s.ports {
		listeners = append(listeners, p.ln)
		if p.link != nil {
			links = append(links, p.link)
		}
	}
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	// Port listeners first: closing one unlinks its path, which must still
	// be ours, and it is while the control socket keeps new switches away.
	for _, ln := range listeners {
		ln.Close()
	}
	s.ctl.Close()
	for _, l := range links {
		l.closeWith(nil)
	}
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	if lk != nil {
		os.RemoveAll(s.paths.dir())
		lk.removeAndUnlock()
		os.Remove(s.paths.base) // fails while other LANs are there; joiners recreate it
	}
}

func (s *switchServer) kickLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *switchServer) acceptControl() {
	defer s.wg.Done()
	for {
		c, err := s.ctl.Accept()
		if err != nil {
			return // closed by stop
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveControl(c)
	}
}

func (s *switchServer) serveControl(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close() // after a join: tells the client its port is gone
	}()
	c.SetDeadline(time.Now().Add(s.ctlTimeout))
	br := bufio.NewReaderSize(c, 512)
	line, err := readLine(br, maxRequestLine)
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
			c.Write(marshalLine(response{Error: err.Error()}))
			// Closing with unread input would reset the connection and
			// could destroy the answer before the client reads it.
			if uc, ok := c.(*net.UnixConn); ok {
				uc.CloseWrite()
			}
			io.Copy(io.Discard, io.LimitReader(c, 1<<20)) // until EOF or the deadline
		}
		return
	}
	req, err := parseRequest(line)
	var resp response
	var joined *port
	if err == nil {
		switch req.op {
		case opStatus:
			resp.Status = s.status()
		case opBlock, opUnblock:
			err = s.setBlocked(req.mac, req.op == opBlock)
		case opJoin:
			joined, err = s.addPort(req.vm, req.mac)
			if joined != nil {
				resp.Port = joined.id
			}
		}
	}
	if err != nil {
		resp.Error = err.Error()
	}
	if _, werr := c.Write(marshalLine(resp)); werr != nil || joined == nil {
		if joined != nil {
			s.removePort(joined)
		}
		return
	}
	// The connection is now the port's reservation: it ends when the
	// client closes it (or dies), or when the switch stops. Whatever the
	// client sends meanwhile is a protocol error and also ends it.
	c.SetDeadline(time.Time{})
	br.ReadByte()
	s.removePort(joined)
}

func (s *switchServer) addPort(vm string, mac [6]byte) (*port, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, fmt.Errorf("the switch of LAN %q is shutting down", s.paths.lan)
	}
	if q := s.byMAC[mac]; q != nil {
		return nil, fmt.Errorf("MAC %s is already used on LAN %q by VM %q (port %d): is a VM of that name already on it?",
			net.HardwareAddr(mac[:]), s.paths.lan, q.vm, q.id)
	}
	s.nextID++
	path := s.paths.port(s.nextID)
	os.Remove(path) // a dead switch's, if any
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("creating the port's socket: %w", err)
	}
	p := &port{id: s.nextID, vm: vm, mac: mac, ln: ln}
	s.ports[p.id] = p
	s.byMAC[mac] = p
	s.kickLocked()
	s.wg.Add(1)
	go s.acceptData(p)
	return p, nil
}

func (s *switchServer) removePort(p *port) {
	s.mu.Lock()
	if p.removed {
		s.mu.Unlock()
		return
	}
	p.removed = true
	delete(s.ports, p.id)
	delete(s.byMAC, p.mac)
	s.forgetLocked(p)
	l := p.link
	s.kickLocked()
	s.mu.Unlock()
	p.ln.Close() // also removes its socket file
	if l != nil {
		l.closeWith(nil)
	}
}

func (s *switchServer) forgetLocked(p *port) {
	for mac, e := range s.fdb {
		if e.port == p {
			delete(s.fdb, mac)
		}
	}
}

func (s *switchServer) setBlocked(mac [6]byte, blocked bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byMAC[mac]
	if p == nil {
		return fmt.Errorf("no port with MAC %s on LAN %q", net.HardwareAddr(mac[:]), s.paths.lan)
	}
	p.blocked.Store(blocked)
	return nil
}

func (s *switchServer) status() *Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &Status{LAN: s.paths.lan, PID: os.Getpid(), Ports: []PortStatus{}}
	for _, p := range s.ports {
		st.Ports = append(st.Ports, PortStatus{
			ID:        p.id,
			VM:        p.vm,
			MAC:       net.HardwareAddr(p.mac[:]).String(),
			Connected: p.link != nil,
			Blocked:   p.blocked.Load(),
			Received:  p.received.Load(),
			Sent:      p.sent.Load(),
			Dropped:   p.dropped.Load(),
			LastError: p.lastErr,
		})
	}
	sort.Slice(st.Ports, func(i, j int) bool { return st.Ports[i].ID < st.Ports[j].ID })
	return st
}

// acceptData takes QEMU's connections to port p, one at a time.
func (s *switchServer) acceptData(p *port) {
	defer s.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed by removePort or stop
		}
		s.mu.Lock()
		switch {
		case p.removed || s.closing:
			c.Close()
		case p.link != nil:
			// Two QEMUs on one port would interleave their frames.
			p.lastErr = "refused a second connection while one was open"
			c.Close()
		default:
			l := &link{conn: c, out: make(chan []byte, queueFrames)}
			p.link = l
			if s.onLink != nil {
				s.onLink(p.id, true)
			}
			s.wg.Add(2)
			go s.readLink(p, l)
			go s.writeLink(p, l)
		}
		s.mu.Unlock()
	}
}

func (s *switchServer) readLink(p *port, l *link) {
	defer s.wg.Done()
	br := bufio.NewReaderSize(l.conn, 64<<10)
	for {
		buf, err := readFrame(br)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				err = nil // QEMU ended, or we closed it
			}
			l.closeWith(err)
			break
		}
		p.received.Add(1)
		s.forward(p, buf)
		if s.onFrame != nil {
			s.onFrame(p.id)
		}
	}
	s.mu.Lock()
	if p.link == l {
		p.link = nil
		s.forgetLocked(p)
		if s.onLink != nil {
			s.onLink(p.id, false)
		}
	}
	if l.cause != nil {
		p.lastErr = l.cause.Error()
	}
	close(l.out) // no one sends any more: p.link is no longer l
	s.mu.Unlock()
}

func (s *switchServer) writeLink(p *port, l *link) {
	defer s.wg.Done()
	broken := false
	for buf := range l.out {
		l.queued.Add(-int64(len(buf)))
		if broken || p.blocked.Load() { // blocked: also frames queued before the Block
			continue
		}
		p.sent.Add(1) // before: whoever reads the frame may look at the count at once
		if _, err := l.conn.Write(buf); err != nil {
			p.sent.Add(^uint64(0))
			broken = true
			if errors.Is(err, net.ErrClosed) {
				err = nil
			} else {
				err = fmt.Errorf("writing to the port: %w", err)
			}
			l.closeWith(err) // the reader sees it and detaches
			continue
		}
	}
}

// forward switches one frame from port p: learn its source, then send it to
// the port that has the destination, or to all other ports when the
// destination is a group address or not (or no longer) known.
func (s *switchServer) forward(from *port, buf []byte) {
	if from.blocked.Load() {
		return
	}
	now := time.Now()
	var src, dst [6]byte
	copy(src[:], frameSrc(buf))
	copy(dst[:], frameDst(buf))
	s.mu.Lock()
	defer s.mu.Unlock()
	if from.removed || from.link == nil {
		return
	}
	if isUnicast(src[:]) {
		s.learnLocked(src, from, now)
	}
	if isUnicast(dst[:]) {
		if e, ok := s.fdb[dst]; ok && now.Sub(e.seen) < fdbMaxAge {
			if e.port != from {
				deliverLocked(e.port, buf)
			}
			return
		}
	}
	for _, q := range s.ports {
		if q != from {
			deliverLocked(q, buf)
		}
	}
}

func (s *switchServer) learnLocked(mac [6]byte, p *port, now time.Time) {
	if _, ok := s.fdb[mac]; !ok && len(s.fdb) >= fdbSize {
		// A guest inventing source addresses must not grow the table
		// without bound: make room from stale entries, or do not learn.
		for m, e := range s.fdb {
			if now.Sub(e.seen) >= fdbMaxAge {
				delete(s.fdb, m)
			}
		}
		if len(s.fdb) >= fdbSize {
			return
		}
	}
	s.fdb[mac] = fdbEntry{port: p, seen: now}
}

// deliverLocked queues buf for port q without ever waiting.
func deliverLocked(q *port, buf []byte) {
	l := q.link
	if l == nil || q.blocked.Load() {
		return
	}
	n := int64(len(buf))
	if l.queued.Add(n) > queueBytes {
		l.queued.Add(-n)
		q.dropped.Add(1)
		return
	}
	select {
	case l.out <- buf:
	default:
		l.queued.Add(-n)
		q.dropped.Add(1)
	}
}
