// Package guest is the guest side of sonix-run's agent protocol
// (docs/protocol.md): it serves the operations of one session on the
// agent's port (package transport carries the session), one per stream,
// several at once.
package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/sonix-run/sonix-run/agent/internal/copytar"
	"github.com/sonix-run/sonix-run/agent/transport"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// DefaultPath is the start of a command's PATH: NixOS's system profile,
// then the usual directories of other systems.
const DefaultPath = "/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MaxOps bounds the operations served at once on one session (a command's
// stdin stream is one); a stream beyond it gets an error.
const MaxOps = 256

// closeWait bounds how long poweroff waits for the host to take its reply
// (the host closes the stream once it has read it) before powering off.
const closeWait = 2 * time.Second

// Options configure Serve.
type Options struct {
	// AgentVersion is the version hello reports.
	AgentVersion string
	// Path is the PATH commands start with (a request's env may replace
	// it); "" means DefaultPath.
	Path string
	// Logf, when set, gets one line per event.
	Logf func(format string, args ...any)
	// PowerOff powers the guest off once a poweroff request has been
	// answered; nil means the real one (Linux: "systemctl poweroff" where
	// systemd is PID 1 and the agent is not, else sync and reboot(2)).
	// Tests set it.
	PowerOff func() error
}

// Why Serve returns, besides a broken session: see package transport.
var (
	// ErrNoHost means the host did not take the preamble, or the port
	// closed before the host answered it: the port's host side is not
	// connected (a virtio port reads as end of file then). The caller
	// opens the port again after a pause.
	ErrNoHost = transport.ErrNoHost
	// ErrHostHungUp means the host ended the session.
	ErrHostHungUp = transport.ErrHostHungUp
	// ErrHostResync means the host gave the session up (it had stopped
	// hearing from the agent, e.g. while the guest was paused, or saw
	// the port close) and asked for a new one.
	ErrHostResync = transport.ErrHostResync
)

// Serve serves one session on conn, a newly opened port (transport.Serve):
// the preamble, the host's answer, then the operations of the streams the
// host opens, until the host hangs up or asks for a new session, the
// session fails or ctx ends; it closes conn. Every operation still running
// then is ended (a command gets SIGTERM, then SIGKILL after its grace) and
// Serve returns once all of them have returned.
func Serve(ctx context.Context, conn io.ReadWriteCloser, opts Options) error {
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &server{opts: opts, slots: make(chan struct{}, MaxOps), execs: map[uint32]*execution{}}
	return transport.Serve(ctx, conn, opts.Logf, s.serveStream)
}

// server serves one session: the operations of its streams, and the
// commands they started, which a stdin stream names by id.
type server struct {
	opts  Options
	slots chan struct{}

	mu     sync.Mutex
	lastID uint32
	execs  map[uint32]*execution
}

// op is one operation on one stream.
type op struct {
	conn net.Conn
	r    *wire.Reader
	w    *wire.Writer
	id   uint32
	name string // the op, once the request is read
	logf func(format string, args ...any)
}

// fail ends the operation with an error frame.
func (o *op) fail(status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	o.logf("stream %d: %s: %s", o.id, o.name, msg)
	o.w.Write(wire.FrameError, wire.EncodeError(status, msg))
}

func (o *op) reply(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return o.w.Write(wire.FrameReply, b)
}

func (s *server) serveStream(ctx context.Context, st net.Conn) {
	defer st.Close()
	o := &op{conn: st, r: wire.NewReader(st), w: wire.NewWriter(st), name: "request", logf: s.opts.Logf}
	if id, ok := st.(interface{ StreamID() uint32 }); ok {
		o.id = id.StreamID()
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		o.fail(0, "too many operations at once (at most %d)", MaxOps)
		return
	}
	f, err := o.r.Next()
	if err != nil {
		o.logf("stream %d: reading the request: %v", o.id, err)
		return
	}
	if f.Type != wire.FrameRequest {
		o.fail(0, "the first frame must be a request frame, not %s", f.Type)
		return
	}
	req, err := wire.DecodeRequest(f.Payload)
	if err != nil {
		o.fail(0, "%v", err)
		return
	}
	o.name = req.Op
	switch req.Op {
	case wire.OpHello:
		if err := o.reply(hello(s.opts.AgentVersion)); err != nil {
			o.logf("stream %d: hello: %v", o.id, err)
		}
	case wire.OpExec:
		s.exec(ctx, o, req.Exec)
	case wire.OpStdin:
		s.stdin(o, req.Stdin.Exec)
	case wire.OpPut:
		s.put(o, string(req.Put.Path))
	case wire.OpGet:
		s.get(o, string(req.Get.Path))
	case wire.OpPowerOff:
		s.powerOff(o)
	}
}

func hello(version string) wire.Hello {
	host, _ := os.Hostname()
	return wire.Hello{
		AgentVersion:    limit(version, 128),
		ProtocolVersion: wire.Version,
		Hostname:        limit(host, 255),
		KernelRelease:   limit(kernelRelease(), 256),
		Arch:            limit(machine(), 32),
		SystemdPID1:     systemdIsInit(),
		PID:             os.Getpid(),
	}
}

func limit(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// machine is the guest's architecture as uname -m says it.
func machine() string {
	if m := unameMachine(); m != "" {
		return m
	}
	return runtime.GOARCH
}

// systemdIsInit says whether systemd is the init system, as sd_booted(3)
// decides it.
func systemdIsInit() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// put extracts the archive the host streams under dst. The agent runs as
// root: like tar for root, it keeps modes exactly and setuid and setgid
// bits. Extraction still never follows a link below dst, against a guest
// user who can write there.
func (s *server) put(o *op, dst string) {
	d, err := copytar.OpenDestination(dst)
	if err != nil {
		o.fail(0, "%v", err)
		return
	}
	defer d.Close()
	if err := o.w.Write(wire.FrameStarted, wire.EncodeStarted(0)); err != nil {
		return
	}
	// Extract reads up to the stdin-eof frame before it puts the copy in
	// place.
	in := &inputReader{r: o.r}
	if err := d.Extract(in, copytar.Options{KeepSetID: true, KeepMode: true}); err != nil {
		o.fail(0, "%s: %v", dst, err)
		return
	}
	o.reply(struct{}{})
}

// inputReader reads the data of stdin frames until the stdin-eof frame.
type inputReader struct {
	r    *wire.Reader
	buf  []byte
	done bool
}

func (in *inputReader) Read(p []byte) (int, error) {
	for len(in.buf) == 0 {
		if in.done {
			return 0, io.EOF
		}
		f, err := in.r.Next()
		if err == io.EOF {
			return 0, errors.New("the host closed the stream before the end of the archive")
		}
		if err != nil {
			return 0, err
		}
		switch f.Type {
		case wire.FrameStdin:
			in.buf = f.Payload
		case wire.FrameStdinEOF:
			in.done = true
		default:
			return 0, fmt.Errorf("unexpected %s frame in an archive", f.Type)
		}
	}
	n := copy(p, in.buf)
	in.buf = in.buf[n:]
	return n, nil
}

// get streams a tar archive of src.
func (s *server) get(o *op, src string) {
	dw := &wire.DataWriter{W: o.w, T: wire.FrameStdout}
	err := copytar.Write(dw, src)
	if err == nil {
		err = dw.Flush()
	}
	if err != nil {
		o.fail(0, "%v", err)
		return
	}
	o.reply(struct{}{})
}

// register gives a started command its id, by which its stdin stream
// names it; unregister forgets it.
func (s *server) register(x *execution) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		s.lastID++
		if s.lastID != 0 && s.execs[s.lastID] == nil {
			break
		}
	}
	s.execs[s.lastID] = x
	return s.lastID
}

func (s *server) unregister(id uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.execs, id)
}

// stdin serves a command's stdin stream until its input ends or the
// command does.
func (s *server) stdin(o *op, id uint32) {
	s.mu.Lock()
	x := s.execs[id]
	s.mu.Unlock()
	if x == nil {
		o.fail(0, "no command %d runs (it has ended)", id)
		return
	}
	x.attachInput(o)
}

func (s *server) powerOff(o *op) {
	if err := canPowerOff(); err != nil && s.opts.PowerOff == nil {
		o.fail(0, "%v", err)
		return
	}
	if err := o.reply(struct{}{}); err != nil {
		return
	}
	// The host closes the stream once it has the reply; powering off
	// before could lose the reply on its way out of the guest.
	o.conn.SetReadDeadline(time.Now().Add(closeWait))
	for {
		if _, err := o.r.Next(); err != nil {
			break
		}
	}
	o.logf("powering off")
	power := s.opts.PowerOff
	if power == nil {
		power = func() error { return powerOff(o.logf) }
	}
	if err := power(); err != nil {
		o.logf("poweroff: %v", err)
	}
}
