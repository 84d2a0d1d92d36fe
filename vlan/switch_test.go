package vlan

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wait bounds every wait for an event in these tests.
const wait = 10 * time.Second

// lanTest runs LAN switches as goroutines of the test, and waits for them.
type lanTest struct {
	t          *testing.T
	cfg        Config
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	starts     atomic.Int32
	exited     chan error
	links      chan linkEvent
	seen       map[linkEvent]int
	ctlTimeout time.Duration
	handled    atomic.Pointer[chan int] // if set, gets the port ID of each frame the switch handled
}

type linkEvent struct {
	lan string
	id  int
	up  bool
}

func newLANTest(t *testing.T, grace time.Duration) *lanTest {
	lt := &lanTest{t: t, exited: make(chan error, 16), links: make(chan linkEvent, 4096), seen: map[linkEvent]int{}}
	lt.ctx, lt.cancel = context.WithCancel(context.Background())
	lt.cfg = Config{Dir: filepath.Join(t.TempDir(), "vlan"), Grace: grace, startSwitch: lt.start}
	t.Cleanup(func() {
		lt.cancel()
		done := make(chan struct{})
		go func() { lt.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("switch goroutines still running %v after the test", wait)
		}
	})
	return lt
}

func (lt *lanTest) start(ctx context.Context, p lanPaths, grace time.Duration, ln *net.UnixListener) error {
	lt.starts.Add(1)
	sw := newSwitch(p, grace, ln)
	if lt.ctlTimeout > 0 {
		sw.ctlTimeout = lt.ctlTimeout
	}
	sw.onLink = func(id int, up bool) {
		select {
		case lt.links <- linkEvent{p.lan, id, up}:
		default:
			panic("link events overflow")
		}
	}
	sw.onFrame = func(id int) {
		if ch := lt.handled.Load(); ch != nil {
			*ch <- id
		}
	}
	lt.wg.Add(1)
	go func() {
		defer lt.wg.Done()
		lt.exited <- sw.run(lt.ctx)
	}()
	return nil
}

func (lt *lanTest) waitLink(p *Port, up bool) {
	lt.t.Helper()
	want := linkEvent{p.LAN, p.ID, up}
	timeout := time.After(wait)
	for lt.seen[want] == 0 {
		select {
		case ev := <-lt.links:
			lt.seen[ev]++
		case <-timeout:
			lt.t.Fatalf("port %d of %s: no link up=%v event within %v", p.ID, p.VM, up, wait)
		}
	}
	lt.seen[want]--
}

func (lt *lanTest) waitExit() {
	lt.t.Helper()
	select {
	case err := <-lt.exited:
		if err != nil {
			lt.t.Fatalf("switch ended with %v", err)
		}
	case <-time.After(wait):
		lt.t.Fatalf("switch still running %v after its last port left", wait)
	}
}

func (lt *lanTest) join(lan, vm string) *Port {
	lt.t.Helper()
	p, err := lt.cfg.Join(context.Background(), lan, vm)
	if err != nil {
		lt.t.Fatal(err)
	}
	lt.t.Cleanup(func() { p.Close() })
	return p
}

func (lt *lanTest) inspect(lan string) map[string]PortStatus {
	lt.t.Helper()
	st, err := lt.cfg.Inspect(context.Background(), lan)
	if err != nil {
		lt.t.Fatal(err)
	}
	m := map[string]PortStatus{}
	for _, p := range st.Ports {
		m[p.VM] = p
	}
	return m
}

// fakeNIC speaks QEMU's side of a port.
type fakeNIC struct {
	t      *testing.T
	name   string
	mac    net.HardwareAddr
	conn   net.Conn
	frames chan []byte
	done   chan struct{}
}

func (lt *lanTest) dial(p *Port) net.Conn {
	lt.t.Helper()
	c, err := net.Dial("unix", p.Socket)
	if err != nil {
		lt.t.Fatal(err)
	}
	lt.t.Cleanup(func() { c.Close() })
	lt.waitLink(p, true)
	return c
}

func (lt *lanTest) connect(p *Port) *fakeNIC {
	lt.t.Helper()
	n := &fakeNIC{t: lt.t, name: p.VM, mac: p.MAC, conn: lt.dial(p)}
	n.read()
	return n
}

// read starts the NIC's reader; the test's cleanup closes the connection
// and waits for it.
func (n *fakeNIC) read() {
	n.frames = make(chan []byte, 64)
	n.done = make(chan struct{})
	go func() {
		defer close(n.done)
		br := bufio.NewReader(n.conn)
		for {
			buf, err := readFrame(br)
			if err != nil {
				close(n.frames)
				return
			}
			n.frames <- buf[headerLen:]
		}
	}()
	n.t.Cleanup(func() {
		n.conn.Close()
		for range n.frames { // unblock the reader
		}
		<-n.done
	})
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ethFrame(dst, src net.HardwareAddr, payload string) []byte {
	f := append(append(append([]byte{}, dst...), src...), 0x88, 0xb5) // a local experimental EtherType
	return append(f, payload...)
}

func (n *fakeNIC) send(dst net.HardwareAddr, payload string) {
	n.t.Helper()
	if _, err := n.conn.Write(encodeFrame(ethFrame(dst, n.mac, payload))); err != nil {
		n.t.Fatalf("%s: sending %q: %v", n.name, payload, err)
	}
}

// expect checks that the next frame n receives is payload from src; frames
// from one port reach another in order, so this also proves that nothing
// sent before payload (and meant not to arrive) arrived.
func (n *fakeNIC) expect(src *fakeNIC, payload string) {
	n.t.Helper()
	select {
	case f, ok := <-n.frames:
		if !ok {
			n.t.Fatalf("%s: connection ended while waiting for %q", n.name, payload)
		}
		if got := string(f[14:]); got != payload || !bytes.Equal(f[6:12], src.mac) {
			n.t.Fatalf("%s: got %q from %s, want %q from %s", n.name, got, net.HardwareAddr(f[6:12]), payload, src.name)
		}
	case <-time.After(wait):
		n.t.Fatalf("%s: no frame within %v, want %q from %s", n.name, wait, payload, src.name)
	}
}

func TestSwitchForwardsFloodsAndLearns(t *testing.T) {
	lt := newLANTest(t, 0)
	a := lt.connect(lt.join("lan0", "a"))
	b := lt.connect(lt.join("lan0", "b"))
	c := lt.connect(lt.join("lan0", "c"))

	a.send(broadcast, "hello")
	b.expect(a, "hello")
	c.expect(a, "hello")

	b.send(a.mac, "to-a") // a was learned from "hello"
	a.expect(b, "to-a")
	a.send(b.mac, "to-b") // b was learned from "to-a"
	b.expect(a, "to-b")

	unknown := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}
	a.send(unknown, "flood")
	b.expect(a, "flood")
	c.expect(a, "flood") // and not "to-a" or "to-b" before it: those were not flooded

	c.send(broadcast, "from-c")
	a.expect(c, "from-c") // and nothing of its own came back to a
	b.expect(c, "from-c")

	st := lt.inspect("lan0")
	for vm, want := range map[string][2]uint64{"a": {3, 2}, "b": {1, 4}, "c": {1, 2}} {
		if got := st[vm]; got.Received != want[0] || got.Sent != want[1] || !got.Connected || got.Dropped != 0 {
			t.Errorf("port of %s: %+v; want %d received, %d sent, connected, none dropped", vm, got, want[0], want[1])
		}
		if got := st[vm].MAC; got != MAC(vm, "lan0").String() {
			t.Errorf("port of %s has MAC %s, want %s", vm, got, MAC(vm, "lan0"))
		}
	}
}

func TestSwitchBlockAndUnblock(t *testing.T) {
	lt := newLANTest(t, 0)
	a := lt.connect(lt.join("lan0", "a"))
	b := lt.connect(lt.join("lan0", "b"))
	c := lt.connect(lt.join("lan0", "c"))
	ctx := context.Background()

	b.send(broadcast, "b-is-here") // so that the switch knows where b is
	a.expect(b, "b-is-here")
	c.expect(b, "b-is-here")

	if err := lt.cfg.Block(ctx, "lan0", b.mac); err != nil {
		t.Fatal(err)
	}
	if st := lt.inspect("lan0"); !st["b"].Blocked || st["a"].Blocked {
		t.Fatalf("after Block(b): %+v", st)
	}
	a.send(b.mac, "to-b-while-blocked")
	a.send(broadcast, "broadcast-while-b-blocked")
	c.expect(a, "broadcast-while-b-blocked")
	handled := make(chan int, 16)
	lt.handled.Store(&handled)
	b.send(broadcast, "from-b-while-blocked")
	b.send(a.mac, "from-b-to-a-while-blocked")
	for i := 0; i < 2; i++ { // the switch has read both before the Unblock
		select {
		case <-handled:
		case <-time.After(wait):
			t.Fatal("the switch did not read b's frames")
		}
	}
	lt.handled.Store(nil)

	if err := lt.cfg.Unblock(ctx, "lan0", b.mac); err != nil {
		t.Fatal(err)
	}
	a.send(broadcast, "after")
	b.expect(a, "after") // nothing sent to b while blocked arrived
	c.expect(a, "after") // nor anything from b
	b.send(a.mac, "back")
	a.expect(b, "back") // nor anything from b to a

	if err := lt.cfg.Block(ctx, "lan0", MAC("nobody", "lan0")); err == nil || !strings.Contains(err.Error(), "no port with MAC") {
		t.Errorf("Block of an unknown MAC: %v", err)
	}
	if err := lt.cfg.Block(ctx, "lan1", b.mac); !errors.Is(err, ErrNoSwitch) {
		t.Errorf("Block on a LAN without a switch: %v, want ErrNoSwitch", err)
	}
	if err := lt.cfg.Block(ctx, "lan0", broadcast); err == nil || !strings.Contains(err.Error(), "group") {
		t.Errorf("Block of the broadcast address: %v", err)
	}
}

// A VM that stops reading loses frames, and no other VM notices.
func TestSwitchSlowPortDropsWithoutBlockingOthers(t *testing.T) {
	lt := newLANTest(t, 0)
	a := lt.connect(lt.join("lan0", "a"))
	b := lt.connect(lt.join("lan0", "b"))
	slowPort := lt.join("lan0", "slow")
	slow := &fakeNIC{t: t, name: "slow", mac: slowPort.MAC, conn: lt.dial(slowPort)} // not reading yet

	// More than the slow port's queue and socket buffer can hold.
	const n = 2000
	pad := strings.Repeat("x", 1400)
	for i := 0; i < n; i++ {
		msg := fmt.Sprint(i, pad)
		a.send(broadcast, msg)
		b.expect(a, msg)
	}
	st := lt.inspect("lan0")
	if st["slow"].Dropped == 0 || st["b"].Dropped != 0 || st["b"].Sent != n {
		t.Fatalf("after %d broadcasts: slow %+v, b %+v; want drops for slow only", n, st["slow"], st["b"])
	}
	t.Logf("slow port: %d frames dropped, %d written", st["slow"].Dropped, st["slow"].Sent)

	// What was not dropped arrives, in order, once it reads; then new
	// frames do too. (The switch counted the drops under the lock that
	// forwarding holds, so the count is final.)
	slow.read()
	last := -1
	for i := uint64(0); i < n-st["slow"].Dropped; i++ {
		select {
		case f := <-slow.frames:
			var seq int
			fmt.Sscan(string(f[14:]), &seq)
			if seq <= last {
				t.Fatalf("slow port: frame %d after %d", seq, last)
			}
			last = seq
		case <-time.After(wait):
			t.Fatalf("slow port: got %d frames, want %d", i, n-st["slow"].Dropped)
		}
	}
	a.send(broadcast, "marker")
	slow.expect(a, "marker")
}

func TestSwitchHostileLengthCutsOnlyThatPort(t *testing.T) {
	lt := newLANTest(t, 0)
	a := lt.connect(lt.join("lan0", "a"))
	b := lt.connect(lt.join("lan0", "b"))
	bad := lt.join("lan0", "bad")
	for _, length := range []uint32{MaxFrame + 1, MinFrame - 1, 0xffffffff} {
		conn := lt.dial(bad)
		conn.Write([]byte{byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length)})
		conn.SetReadDeadline(time.Now().Add(wait))
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("length %d: read %v, want the switch to close the connection", length, err)
		}
		lt.waitLink(bad, false)
		st := lt.inspect("lan0")["bad"]
		if st.Connected || !strings.Contains(st.LastError, fmt.Sprintf("frame length %d", length)) {
			t.Fatalf("length %d: port status %+v", length, st)
		}
		a.send(b.mac, "still-fine")
		b.expect(a, "still-fine")
	}
	// The port stays reserved: a good connection works.
	good := lt.connect(bad)
	a.send(broadcast, "welcome-back")
	good.expect(a, "welcome-back")
	b.expect(a, "welcome-back")
}

func TestSwitchRefusesSecondConnection(t *testing.T) {
	lt := newLANTest(t, 0)
	a := lt.connect(lt.join("lan0", "a"))
	pb := lt.join("lan0", "b")
	b := lt.connect(pb)
	second, err := net.Dial("unix", pb.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(wait))
	if _, err := second.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("second connection: read %v, want EOF", err)
	}
	if st := lt.inspect("lan0")["b"]; !strings.Contains(st.LastError, "second connection") || !st.Connected {
		t.Fatalf("port b: %+v", st)
	}
	a.send(broadcast, "first-still-works")
	b.expect(a, "first-still-works")
}

func TestSwitchControlHostile(t *testing.T) {
	lt := newLANTest(t, 0)
	lt.ctlTimeout = 200 * time.Millisecond
	p := lt.join("lan0", "a")
	control := lanPaths{lt.cfg.Dir, "lan0"}.control()
	ask := func(send string) string {
		t.Helper()
		c, err := net.Dial("unix", control)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		c.Write([]byte(send))
		b, err := io.ReadAll(c) // the switch answers, then closes
		if err != nil {
			t.Fatalf("%.40q: %v", send, err)
		}
		return string(b)
	}
	for send, want := range map[string]string{
		"garbage\n":                "not a JSON object",
		`{"op":"shutdown"}` + "\n": "unknown request",
		strings.Repeat("x", 5000):  "longer than",
		"":                         "", // says nothing: closed after ctlTimeout
		`{"op":"status"}` + "\n":   `"vm":"a"`,
		`{"op":"join","vm":"a","mac":"` + p.MAC.String() + `"}` + "\n": `already used on LAN \"lan0\" by VM \"a\"`,
	} {
		if got := ask(send); !strings.Contains(got, want) {
			t.Errorf("sent %.40q: got %q, want %q in it", send, got, want)
		}
	}
	if _, err := lt.cfg.Join(context.Background(), "lan0", "a"); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second join as VM a: %v", err)
	}
	if _, err := lt.cfg.Join(context.Background(), "../x", "a"); err == nil || !strings.Contains(err.Error(), "vlan name") {
		t.Errorf("join of LAN ../x: %v", err)
	}
}

func TestSwitchExitsAfterLastPortAndRemovesItsFiles(t *testing.T) {
	lt := newLANTest(t, 50*time.Millisecond)
	a := lt.join("lan0", "a")
	b := lt.join("lan0", "b")
	if _, err := os.Stat(a.Socket); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.Socket); !os.IsNotExist(err) {
		t.Errorf("a's socket after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	lt.waitExit()
	if _, err := os.Stat(lt.cfg.Dir); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(lt.cfg.Dir)
		t.Fatalf("the vlan directory remains (%v): %v", err, entries)
	}
	if _, err := lt.cfg.Inspect(context.Background(), "lan0"); !errors.Is(err, ErrNoSwitch) {
		t.Errorf("Inspect after the end: %v, want ErrNoSwitch", err)
	}
	// A later join starts a new switch.
	lt.join("lan0", "a")
	if n := lt.starts.Load(); n != 2 {
		t.Errorf("%d switches started, want 2", n)
	}
}

func TestJoinConcurrentStartsOneSwitch(t *testing.T) {
	lt := newLANTest(t, time.Minute)
	const n = 8
	ports := make([]*Port, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ports[i], errs[i] = lt.cfg.Join(context.Background(), "lan0", fmt.Sprint("vm", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	if got := lt.starts.Load(); got != 1 {
		t.Fatalf("%d switches started, want 1", got)
	}
	if st := lt.inspect("lan0"); len(st) != n {
		t.Fatalf("switch has %d ports, want %d: %v", len(st), n, st)
	}
	// A VM that leaves and comes back within the grace period finds the
	// same switch, and its name free again.
	if err := ports[0].Close(); err != nil {
		t.Fatal(err)
	}
	ports[0] = lt.join("lan0", "vm0")
	for _, p := range ports {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := lt.starts.Load(); got != 1 {
		t.Fatalf("%d switches started, want 1", got)
	}
	lt.cancel() // the grace is a minute: stop it now; it still cleans up
	lt.waitExit()
	if _, err := os.Stat(lt.cfg.Dir); !os.IsNotExist(err) {
		t.Fatalf("the vlan directory remains: %v", err)
	}
}

// A switch that was killed leaves its sockets behind; the next joiner
// replaces them.
func TestJoinReplacesDeadSwitchFiles(t *testing.T) {
	lt := newLANTest(t, 0)
	p := lanPaths{lt.cfg.Dir, "lan0"}
	if err := ensureDir(p.base); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(p.dir(), 0o700)
	for _, path := range []string{p.control(), p.port(1)} {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // the socket file stays, no one listens
	}
	a := lt.connect(lt.join("lan0", "a"))
	b := lt.connect(lt.join("lan0", "b"))
	a.send(broadcast, "over-the-ruins")
	b.expect(a, "over-the-ruins")
	if got := lt.starts.Load(); got != 1 {
		t.Fatalf("%d switches started, want 1", got)
	}
}

func TestEnsureDirRefusesUnsafeDirectories(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o755)
	if err := ensureDir(open); err == nil || !strings.Contains(err.Error(), "mode 0755") {
		t.Errorf("a 0755 directory: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(t.TempDir(), link)
	if err := ensureDir(link); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a symlink: %v", err)
	}
	fresh := filepath.Join(dir, "fresh")
	if err := ensureDir(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Errorf("made with mode %v", fi.Mode().Perm())
	}
	long := Config{Dir: "/" + strings.Repeat("d", 90)}
	if _, err := long.Join(context.Background(), "lan0", "a"); err == nil || !strings.Contains(err.Error(), "longer than the 103 bytes") {
		t.Errorf("a too long socket path: %v", err)
	}
}
