// Package guest is the guest side of sonix-run's agent protocol
// (docs/harness.md): it serves a yamux session on the agent's port, one
// operation per stream, several at once.
package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/sonix-run/sonix-run/agent/internal/copytar"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// DefaultPath is the start of a command's PATH: NixOS's system profile,
// then the usual directories of other systems.
const DefaultPath = "/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MaxOps bounds the operations served at once on one session; a stream
// beyond it gets an error.
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

// ErrNoHost means the host did not take the preamble, or the port closed
// before the host answered it: the port's host side is not connected (a
// virtio port reads as end of file then). The caller opens the port again
// after a pause.
var ErrNoHost = errors.New("the host side of the port is not connected")

// ErrHostHungUp means the host ended the session.
var ErrHostHungUp = errors.New("the host hung up")

// ErrHostResync means the host gave the session up (it had stopped hearing
// from the agent, e.g. while the guest was paused) and asked for a new one.
var ErrHostResync = errors.New("the host gave the session up and asked for a new one")

// Serve serves one session on conn, a newly opened port: it writes the
// preamble, waits for the host's answer (skipping whatever an earlier
// session left in the port), then serves yamux until the host hangs up or
// asks for a new session, the session fails or ctx ends, and closes conn.
// Every operation still running then is ended (a command gets SIGTERM,
// then SIGKILL after its grace) and Serve returns once all of them have
// returned.
func Serve(ctx context.Context, conn io.ReadWriteCloser, opts Options) error {
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	pc, id, err := handshake(ctx, conn)
	if err != nil {
		conn.Close()
		return err
	}
	opts.Logf("session %s: the host answered", id)
	sess, err := yamux.Server(pc, wire.YamuxConfig())
	if err != nil {
		conn.Close()
		return err
	}
	s := &server{opts: opts, slots: make(chan struct{}, MaxOps)}
	opsCtx, cancelOps := context.WithCancel(ctx)
	defer cancelOps()

	var wg sync.WaitGroup
	sessionOver := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			sess.Close()
		case <-sessionOver:
		}
	}()
	for {
		st, aerr := sess.AcceptStream()
		if aerr != nil {
			err = aerr
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveStream(opsCtx, st)
		}()
	}
	cancelOps()
	close(sessionOver)
	sess.Close()
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// A socket's host that closes with bytes unread resets it; a
		// write after its close breaks the pipe.
		return ErrHostHungUp
	case errors.Is(err, ErrHostResync):
		return ErrHostResync
	}
	return fmt.Errorf("session %s: %w", id, err)
}

// handshake writes the preamble on a newly opened port and reads up to the
// host's answer to it. Before that answer the port may hold anything the
// host sent to an earlier agent (QEMU keeps what the host writes while the
// port is closed): every byte up to the line that names this preamble's id
// is skipped. It returns the port ready for yamux, with the bytes that
// followed the answer.
func handshake(ctx context.Context, conn io.ReadWriteCloser) (*portConn, string, error) {
	id := wire.NewSessionID()
	// Nothing else ends a write or read that waits for the host.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// A port's write waits while its host side is not connected; a
	// socket's fails when the host has gone.
	if _, err := conn.Write(wire.AgentPreamble(id)); err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", fmt.Errorf("%w (writing the preamble: %v)", ErrNoHost, err)
	}
	var versionErr error
	scan := wire.NewLineScanner(wire.HostMagic, func(line []byte) bool {
		l, err := wire.ParseLine(line, wire.HostMagic)
		switch {
		case err != nil:
			return false
		case l.Version != wire.Version && bytes.HasSuffix(line, []byte(" "+id)):
			versionErr = fmt.Errorf("the host answered in protocol version %d; this agent speaks %d", l.Version, wire.Version)
			return true
		}
		return l.Token == id
	})
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if _, rest, ok := scan.Feed(buf[:n]); ok {
			if versionErr != nil {
				return nil, "", versionErr
			}
			pc := &portConn{conn: conn, pending: rest}
			pc.w = wire.NewFrameWriter(pc.writeFrame, wire.MaxPortWrite)
			return pc, id, nil
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, "", ctx.Err()
		case errors.Is(err, io.EOF):
			return nil, "", ErrNoHost
		default:
			return nil, "", fmt.Errorf("waiting for the host's answer: %w", err)
		}
	}
}

// portConn is the port under the guest's yamux session. It follows yamux's
// frames in what the host sends, so that the first byte that should start
// a frame but does not ends the session with what it was (the host's
// resync line, or garbage); and it writes every frame with one write of at
// most wire.MaxPortWrite bytes, so that the agent, killed at any moment,
// never leaves a torn frame in front of the next agent's preamble.
type portConn struct {
	conn    io.ReadWriteCloser
	pending []byte // read from conn, not yet given to yamux
	tracker wire.FrameTracker
	bad     []byte // from a frame boundary on: bytes that are not yamux
	err     error  // once set, every Read returns it
	w       *wire.FrameWriter
}

func (c *portConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.bad != nil {
		c.err = c.judge()
		return 0, c.err
	}
	var n int
	var readErr error
	if len(c.pending) > 0 {
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	} else {
		n, readErr = c.conn.Read(p)
	}
	k, stopped := c.tracker.Advance(p[:n])
	if stopped {
		c.bad = append(append([]byte(nil), p[k:n]...), c.pending...)
		c.pending = nil
		if k == 0 {
			c.err = c.judge()
			return 0, c.err
		}
		return k, nil
	}
	if readErr != nil {
		c.err = readErr // returned once these bytes are taken
		if k == 0 {
			return 0, c.err
		}
	}
	return k, nil
}

// judge says what the bytes that are not yamux are, reading as many more
// as it takes to tell the host's resync line.
func (c *portConn) judge() error {
	want := wire.HostResync()
	for len(c.bad) < len(want) && bytes.HasPrefix(want, c.bad) {
		more := make([]byte, len(want)-len(c.bad))
		n, err := c.conn.Read(more)
		c.bad = append(c.bad, more[:n]...)
		if err != nil {
			break
		}
	}
	if bytes.HasPrefix(c.bad, want) {
		return ErrHostResync
	}
	return fmt.Errorf("the host sent bytes that are not yamux: %q", c.bad[:min(len(c.bad), 32)])
}

func (c *portConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *portConn) writeFrame(frame []byte) error {
	_, err := c.conn.Write(frame)
	return err
}

func (c *portConn) Close() error { return c.conn.Close() }

type server struct {
	opts  Options
	slots chan struct{}
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

func (s *server) serveStream(ctx context.Context, st *yamux.Stream) {
	defer st.Close()
	o := &op{conn: st, r: wire.NewReader(st), w: wire.NewWriter(st), id: st.StreamID(), name: "request", logf: s.opts.Logf}
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
	if err := o.w.Write(wire.FrameStarted, wire.EncodeCount(0)); err != nil {
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
	bw := bufio.NewWriterSize(dataWriter{o.w}, wire.MaxData)
	err := copytar.Write(bw, src)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		o.fail(0, "%v", err)
		return
	}
	o.reply(struct{}{})
}

// dataWriter writes data as stdout frames.
type dataWriter struct{ w *wire.Writer }

func (d dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), wire.MaxData)
		if err := d.w.Write(wire.FrameStdout, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
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
