package vlan

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
	"sync"
	"syscall"
	"time"
)

// ErrNoSwitch is returned by Block, Unblock and Inspect when no switch runs
// for the LAN: no VM has joined it, or the last one left.
var ErrNoSwitch = errors.New("no switch is running for this LAN (no VM is on it)")

// maxSocketPath is the longest Unix socket path that works everywhere
// (sun_path is 108 bytes on Linux, 104 on macOS, with the terminating NUL).
const maxSocketPath = 103

// joinTimeout bounds Join when ctx has no earlier deadline: it covers
// starting a switch process on a loaded CI machine.
const joinTimeout = 30 * time.Second

// closeTimeout bounds how long Port.Close waits for the switch to confirm.
const closeTimeout = 5 * time.Second

// Config says where LANs live. The zero value is ready to use: DefaultDir()
// and DefaultGrace.
type Config struct {
	// Dir is the per-user directory of LANs; "" means DefaultDir().
	Dir string
	// Grace is how long a switch with no ports waits before it exits;
	// 0 means DefaultGrace.
	Grace time.Duration

	// startSwitch, when set (by tests), runs a LAN's switch instead of a
	// new process. It owns ln from then on.
	startSwitch func(ctx context.Context, p lanPaths, grace time.Duration, ln *net.UnixListener) error
}

// Port is a VM's place on a LAN: what QEMU needs to connect (qemu/argv.go),
// reserved until Close. Closing it (or the death of this process) ends the
// port, and the switch cuts QEMU's connection to it.
type Port struct {
	LAN    string
	VM     string
	ID     int              // the switch's number for the port, unique on the LAN while the switch runs
	Socket string           // the Unix socket QEMU's stream netdev connects to
	MAC    net.HardwareAddr // MAC(VM, LAN)

	conn      *net.UnixConn // the reservation
	closeOnce sync.Once
	closeErr  error
}

// Join reserves a port for VM vm on LAN lan, with the Default config.
func Join(ctx context.Context, lan, vm string) (*Port, error) { return Config{}.Join(ctx, lan, vm) }

// Block cuts the port with address mac off LAN lan, with the Default config.
func Block(ctx context.Context, lan string, mac net.HardwareAddr) error {
	return Config{}.Block(ctx, lan, mac)
}

// Unblock undoes Block, with the Default config.
func Unblock(ctx context.Context, lan string, mac net.HardwareAddr) error {
	return Config{}.Unblock(ctx, lan, mac)
}

// Inspect returns the state of LAN lan's switch, with the Default config.
func Inspect(ctx context.Context, lan string) (*Status, error) { return Config{}.Inspect(ctx, lan) }

func (c Config) paths(lan string) (lanPaths, error) {
	if err := CheckName(lan); err != nil {
		return lanPaths{}, err
	}
	base := c.Dir
	if base == "" {
		base = DefaultDir()
	}
	p := lanPaths{base: base, lan: lan}
	if longest := p.port(999999); len(longest) > maxSocketPath {
		return p, fmt.Errorf("vlan %q: its sockets' paths (such as %s) would be longer than the %d bytes Unix sockets allow; use a shorter directory (XDG_RUNTIME_DIR) or LAN name", lan, longest, maxSocketPath)
	}
	return p, nil
}

// Join reserves a port for VM vm on LAN lan, starting the LAN's switch if
// none runs. The port's MAC is MAC(vm, lan); a second VM of the same name on
// the same LAN is refused.
func (c Config) Join(ctx context.Context, lan, vm string) (*Port, error) {
	p, err := c.paths(lan)
	if err != nil {
		return nil, err
	}
	if vm == "" || len(vm) > MaxVMNameLen {
		return nil, fmt.Errorf("vlan %q: VM name must be 1 to %d bytes, got %d", lan, MaxVMNameLen, len(vm))
	}
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	mac := MAC(vm, lan)
	// The per-user directory disappears with the last switch; a join
	// racing with that makes it again. Each retry follows one such removal.
	for attempt := 0; ; attempt++ {
		if err := ensureDir(p.base); err != nil {
			return nil, err
		}
		lk, err := lockLAN(ctx, p)
		if errors.Is(err, fs.ErrNotExist) && attempt < 10 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("vlan %q: %w", lan, err)
		}
		port, err := c.joinLocked(ctx, p, vm, mac)
		lk.unlock()
		return port, err
	}
}

func (c Config) joinLocked(ctx context.Context, p lanPaths, vm string, mac net.HardwareAddr) (*Port, error) {
	conn, err := dialControl(ctx, p)
	if errors.Is(err, ErrNoSwitch) {
		if err := c.start(ctx, p); err != nil {
			return nil, err
		}
		conn, err = dialControl(ctx, p)
	}
	if err != nil {
		return nil, err
	}
	resp, err := roundTrip(ctx, conn, request{Op: opJoin, VM: vm, MAC: mac.String()})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("vlan %q: joining as VM %q: %w", p.lan, vm, err)
	}
	conn.SetDeadline(time.Time{})
	return &Port{LAN: p.lan, VM: vm, ID: resp.Port, Socket: p.port(resp.Port), MAC: mac, conn: conn}, nil
}

// start starts the LAN's switch; the caller holds the LAN's lock and found
// no switch. The control socket is made here, so it accepts connections
// before the switch even runs, and a switch that fails to start leaves the
// joiner's connection refused rather than waiting.
func (c Config) start(ctx context.Context, p lanPaths) (err error) {
	if err := os.RemoveAll(p.dir()); err != nil { // a dead switch's leftovers
		return fmt.Errorf("vlan %q: removing a dead switch's files: %w", p.lan, err)
	}
	if err := os.Mkdir(p.dir(), 0o700); err != nil {
		return fmt.Errorf("vlan %q: %w", p.lan, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p.dir())
		}
	}()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.control(), Net: "unix"})
	if err != nil {
		return fmt.Errorf("vlan %q: %w", p.lan, err)
	}
	ln.SetUnlinkOnClose(false) // the switch removes it, under the lock
	grace := c.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	if c.startSwitch != nil {
		return c.startSwitch(ctx, p, grace, ln)
	}
	defer ln.Close() // the switch process has its own copy
	return startSwitchProcess(ctx, p, grace, ln)
}

// dialControl connects to the LAN's switch; ErrNoSwitch (wrapped) when there
// is none: no socket, or no one listening on it (a switch that was killed).
func dialControl(ctx context.Context, p lanPaths) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", p.control())
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("vlan %q: %w", p.lan, ErrNoSwitch)
		}
		return nil, fmt.Errorf("vlan %q: connecting to its switch: %w", p.lan, err)
	}
	return conn.(*net.UnixConn), nil
}

// roundTrip sends req and reads the answer, within ctx.
func roundTrip(ctx context.Context, conn net.Conn, req request) (*response, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(marshalLine(req)); err != nil {
		return nil, fmt.Errorf("sending %q to the switch: %w", req.Op, err)
	}
	// Nothing follows the answer but the end of the connection, so the
	// buffered reader cannot swallow anything.
	line, err := readLine(bufio.NewReader(conn), maxResponseLine)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the switch closed the connection without answering")
		}
		return nil, fmt.Errorf("reading the switch's answer to %q: %w", req.Op, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("the switch's answer to %q is not JSON: %w", req.Op, err)
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp, nil
}

// Block cuts the port with address mac (see MAC) off LAN lan: the switch
// drops every frame from it and to it until Unblock. QEMU stays connected,
// so to the guest it looks like a cable pulled out at the far end.
func (c Config) Block(ctx context.Context, lan string, mac net.HardwareAddr) error {
	return c.setBlocked(ctx, lan, mac, opBlock)
}

// Unblock reconnects a port that Block cut off.
func (c Config) Unblock(ctx context.Context, lan string, mac net.HardwareAddr) error {
	return c.setBlocked(ctx, lan, mac, opUnblock)
}

func (c Config) setBlocked(ctx context.Context, lan string, mac net.HardwareAddr, op string) error {
	if _, err := parseMAC(mac.String()); err != nil {
		return fmt.Errorf("vlan %q: %s: %w", lan, op, err)
	}
	_, err := c.control(ctx, lan, request{Op: op, MAC: mac.String()})
	return err
}

// Inspect returns the state of LAN lan's switch and its ports.
func (c Config) Inspect(ctx context.Context, lan string) (*Status, error) {
	resp, err := c.control(ctx, lan, request{Op: opStatus})
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("vlan %q: the switch's status answer has no status", lan)
	}
	return resp.Status, nil
}

func (c Config) control(ctx context.Context, lan string, req request) (*response, error) {
	p, err := c.paths(lan)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, controlDeadline)
	defer cancel()
	conn, err := dialControl(ctx, p)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := roundTrip(ctx, conn, req)
	if err != nil {
		return nil, fmt.Errorf("vlan %q: %s: %w", lan, req.Op, err)
	}
	return resp, nil
}

// Close gives the port up and waits (a few seconds at most) until the switch
// has removed it, so that the same VM can join again at once.
func (p *Port) Close() error {
	p.closeOnce.Do(func() {
		p.conn.CloseWrite()
		p.conn.SetReadDeadline(time.Now().Add(closeTimeout))
		_, err := io.Copy(io.Discard, p.conn)
		p.conn.Close()
		if errors.Is(err, syscall.ECONNRESET) {
			err = nil // the switch is gone, and the port with it
		}
		if err != nil {
			p.closeErr = fmt.Errorf("vlan %q: port %d of VM %q: the switch did not confirm its removal: %w", p.LAN, p.ID, p.VM, err)
		}
	})
	return p.closeErr
}
