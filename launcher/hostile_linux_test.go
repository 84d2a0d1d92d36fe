package launcher

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
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/vmm"
)

// The tests here play the attack of another local user for real: as root,
// they run this test binary again as uid 65534 (hostileMain), which makes
// directories, plants owner files and serves sockets as that user.

func TestMain(m *testing.M) {
	if os.Getenv("SONIX_TEST_HOSTILE") != "" {
		os.Exit(hostileMain())
	}
	os.Exit(m.Run())
}

// hostileMain is the other user's side.
//
// With SONIX_HOSTILE_DIR, it makes that directory (and its missing
// parents, each open to all, as an attacker would), writes an owner file
// naming SONIX_HOSTILE_OWNER with its own pid when that is set, listens on
// ctl.sock there (mode 0777) without accepting, says "ready", and waits
// for a line on stdin: then it takes every connection made meanwhile and
// every byte sent on them, without waiting, and says
// "conns=N bytes=M".
//
// With SONIX_HOSTILE_CONNECT, it connects to that socket, sends
// SONIX_HOSTILE_SEND and prints the reply line.
func hostileMain() int {
	if path := os.Getenv("SONIX_HOSTILE_CONNECT"); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Printf("dial: %v\n", err)
			return 1
		}
		defer c.Close()
		// A server that refuses at once may have hung up before this
		// write: its reply is read all the same.
		_, werr := io.WriteString(c, os.Getenv("SONIX_HOSTILE_SEND"))
		line, err := bufio.NewReader(c).ReadString('\n')
		fmt.Printf("reply: %s (%v; write: %v)\n", strings.TrimSpace(line), err, werr)
		return 0
	}
	dir := os.Getenv("SONIX_HOSTILE_DIR")
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	for i := len(made) - 1; i >= 0; i-- {
		if err := os.Mkdir(made[i], 0o777); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Chmod(made[i], 0o777)
	}
	if name := os.Getenv("SONIX_HOSTILE_OWNER"); name != "" {
		b, _ := json.Marshal(Owner{Name: name, PID: os.Getpid(), Start: 0, Target: "/nix/store/planted", Started: time.Now()})
		f := filepath.Join(dir, ownerFile)
		if err := os.WriteFile(f, b, 0o666); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Chmod(f, 0o666)
	}
	path := filepath.Join(dir, controlSocket)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		err = syscall.Bind(fd, &syscall.SockaddrUnix{Name: path})
	}
	if err == nil {
		err = syscall.Listen(fd, 64)
	}
	if err == nil {
		err = os.Chmod(path, 0o777)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	syscall.SetNonblock(fd, true)
	conns, n := 0, 0
	buf := make([]byte, 4096)
	for {
		c, _, err := syscall.Accept(fd)
		if err != nil {
			break // EAGAIN: no more
		}
		conns++
		for {
			k, _, err := syscall.Recvfrom(c, buf, syscall.MSG_DONTWAIT)
			if err != nil || k <= 0 {
				break
			}
			n += k
		}
		syscall.Close(c)
	}
	fmt.Printf("conns=%d bytes=%d\n", conns, n)
	return 0
}

// hostileWorld is a directory tree the other user can reach: the test
// binary (to run as them) and a temporary directory like /tmp (sticky,
// open to all).
type hostileWorld struct {
	root, bin, tmp string
}

func newHostileWorld(t *testing.T) *hostileWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: plays another local user (uid 65534) for real")
	}
	root, err := os.MkdirTemp("", "sonix-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	for d := filepath.Dir(root); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Skipf("uid %d cannot reach %s: %v %v", hostileUID, root, fi.Mode(), err)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	w := &hostileWorld{root: root, bin: filepath.Join(root, "bin"), tmp: filepath.Join(root, "tmp")}
	os.Mkdir(w.bin, 0o755)
	os.Mkdir(w.tmp, 0o777)
	os.Chmod(w.tmp, 0o1777)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(w.bin, "launcher.test")
	if os.Link(exe, dst) != nil {
		data, err := os.ReadFile(exe)
		if err == nil {
			err = os.WriteFile(dst, data, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dst, 0o755)
	return w
}

// hostile is a running process of the other user.
type hostile struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
}

// start runs the test binary as uid 65534 with env (hostileMain's
// variables) and, when it serves, waits for its "ready".
func (w *hostileWorld) start(t *testing.T, env ...string) *hostile {
	t.Helper()
	h := &hostile{t: t}
	h.cmd = exec.Command(filepath.Join(w.bin, "launcher.test"))
	h.cmd.Dir = w.root
	h.cmd.Env = append([]string{"SONIX_TEST_HOSTILE=1", "PATH=/usr/bin:/bin", "HOME=/nonexistent"}, env...)
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: hostileUID, Gid: hostileUID}}
	h.cmd.Stderr = &h.stderr
	var err error
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewReader(out)
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		h.cmd.Wait()
	})
	return h
}

func (h *hostile) line() string {
	h.t.Helper()
	l, err := h.out.ReadString('\n')
	if err != nil {
		h.t.Fatalf("the other user's process: %v; stderr %q", err, h.stderr.String())
	}
	return strings.TrimSpace(l)
}

// plant has the other user make dir with an owner file naming owner ("":
// none) and a control socket open to all, and waits until it serves.
func (w *hostileWorld) plant(t *testing.T, dir, owner string) *hostile {
	t.Helper()
	h := w.start(t, "SONIX_HOSTILE_DIR="+dir, "SONIX_HOSTILE_OWNER="+owner)
	if l := h.line(); l != "ready" {
		t.Fatalf("the other user's process said %q; stderr %q", l, h.stderr.String())
	}
	return h
}

// received ends a planting process and says how many connections and
// bytes its socket got.
func (h *hostile) received() (conns, n int) {
	h.t.Helper()
	io.WriteString(h.in, "report\n")
	if _, err := fmt.Sscanf(h.line(), "conns=%d bytes=%d", &conns, &n); err != nil {
		h.t.Fatal(err)
	}
	h.cmd.Wait()
	return conns, n
}

// The attack: with no $XDG_RUNTIME_DIR, another user makes
// $TMPDIR/sonix-run-UID first, with a run directory "dev" whose owner file
// names a live process of theirs and whose socket is open to all. The base
// is ignored: list shows nothing and says why on one line, exec/cp/stop/
// forward (Connect) find no "dev", a run refuses the base rather than
// create its directory there, and the planted socket gets no connection.
func TestPlantedTempBaseIsIgnored(t *testing.T) {
	w := newHostileWorld(t)
	t.Setenv("TMPDIR", w.tmp)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	base := owndir.TempBase()
	h := w.plant(t, filepath.Join(base, runDirPrefix+"dev"), "dev")

	vms, notice := Running()
	if len(vms) != 0 {
		t.Errorf("Running listed %+v", vms)
	}
	if strings.Contains(notice, "\n") || !strings.Contains(notice, base+", which belongs to uid 65534") || !strings.Contains(notice, "$TMPDIR") {
		t.Errorf("notice %q: want one line naming %s, its owner and what to do", notice, base)
	}
	t.Log(notice)
	if vms := List(); len(vms) != 0 {
		t.Errorf("List = %+v", vms)
	}
	_, err := Connect("dev")
	if ReasonOf(err) != BadInput || !strings.Contains(err.Error(), `no VM named "dev"`) || !strings.Contains(err.Error(), base) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Connect(dev) = %v", err)
	}
	dir, err := createRunDir("mine", "target", "")
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("createRunDir in the planted base = %q, %v", dir, err)
	} else {
		t.Log(err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 1 {
		t.Errorf("the planted base was written: %v", entries)
	}
	if conns, n := h.received(); conns != 0 || n != 0 {
		t.Errorf("the planted socket got %d connections, %d bytes", conns, n)
	}
}

// With $XDG_RUNTIME_DIR set, run directories are found there: a planted
// base in $TMPDIR with a "dev" and an "evil" is never read or dialled,
// and the real "dev" is the one reached.
func TestPlantedTempBaseWithXDG(t *testing.T) {
	w := newHostileWorld(t)
	t.Setenv("TMPDIR", w.tmp)
	t.Setenv("XDG_RUNTIME_DIR", privateDir(t))
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	base := owndir.TempBase()
	h1 := w.plant(t, filepath.Join(base, runDirPrefix+"dev"), "dev")
	h2 := w.plant(t, filepath.Join(base, runDirPrefix+"evil"), "evil")

	dir, err := createRunDir("dev", "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != os.Getenv("XDG_RUNTIME_DIR") {
		t.Errorf("run directory %s, want one in $XDG_RUNTIME_DIR", dir)
	}
	serveControl(t, dir)
	vms, notice := Running()
	if len(vms) != 1 || vms[0].Name != "dev" || vms[0].Target != "mine" {
		t.Errorf("Running = %+v", vms)
	}
	t.Logf("notice: %s", notice)
	r, err := Connect("dev")
	if err != nil || r.Owner.Dir != dir {
		t.Fatalf("Connect(dev) = %+v, %v", r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := r.dial(ctx, controlRequest{Op: "info"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := Connect("evil"); ReasonOf(err) != BadInput {
		t.Errorf("Connect(evil) = %v", err)
	}
	for _, h := range []*hostile{h1, h2} {
		if conns, n := h.received(); conns != 0 || n != 0 {
			t.Errorf("a planted socket got %d connections, %d bytes", conns, n)
		}
	}
}

// serveControl serves a real control socket for the run directory dir.
func serveControl(t *testing.T, dir string) *Instance {
	t.Helper()
	i := &Instance{vm: &vmm.VM{RunDir: dir}, msgs: newMessages(io.Discard, false, false), stopReq: make(chan stopRequest, 1)}
	s, err := listenControl(i)
	if err != nil {
		t.Fatal(err)
	}
	i.ctl = s
	t.Cleanup(func() { s.close(context.Background()) })
	return i
}

// The control server answers a peer of another uid with a refusal and
// does nothing it asks; the run's own user is served. The socket is 0600.
func TestControlRefusesAnotherUID(t *testing.T) {
	w := newHostileWorld(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := filepath.Join(w.root, "run")
	os.Mkdir(dir, 0o700)
	o := Owner{Name: "dev", PID: os.Getpid(), Target: "mine"}
	if err := writeOwner(dir, o); err != nil {
		t.Fatal(err)
	}
	i := serveControl(t, dir)
	sock := filepath.Join(dir, controlSocket)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, %v; want mode 0600", fi.Mode(), err)
	}
	// Open the way for the other user, as a careless umask or a swapped
	// directory would: only the peer check stands.
	os.Chmod(dir, 0o755)
	os.Chmod(sock, 0o777)
	h := w.start(t, "SONIX_HOSTILE_CONNECT="+sock, `SONIX_HOSTILE_SEND={"op":"stop"}`+"\n")
	reply := h.line()
	want := `reply: {"ok":false,"error":"refused: this VM's control socket serves uid 0 only, not uid 65534"}`
	if !strings.HasPrefix(reply, want) {
		t.Errorf("the other user got %q\nwant %q", reply, want)
	}
	h.cmd.Wait()
	select {
	case r := <-i.stopReq:
		t.Errorf("the other user's stop was done: %+v", r)
	default:
	}
	// The run's own user is served.
	r := &Remote{Owner: Owner{Name: "dev", Dir: dir}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := r.dial(ctx, controlRequest{Op: "stop"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-i.stopReq:
	case <-ctx.Done():
		t.Error("the owner's stop was not asked for")
	}
}

// The client sends nothing to a control socket that is not the user's, or
// that a process of another uid serves (even one whose socket file was
// made to look like the user's).
func TestClientRefusesServerOfAnotherUID(t *testing.T) {
	w := newHostileWorld(t)
	dir := filepath.Join(w.tmp, "theirs")
	h := w.plant(t, dir, "dev")
	sock := filepath.Join(dir, controlSocket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := dialControl(ctx, sock); err == nil || !strings.Contains(err.Error(), "not a socket of yours") {
		t.Errorf("dialControl to the other user's socket: %v", err)
		if c != nil {
			c.Close()
		}
	}
	// Their server behind a socket file that looks like ours: the peer's
	// uid still tells.
	if err := os.Lchown(sock, 0, 0); err != nil {
		t.Fatal(err)
	}
	if c, err := dialControl(ctx, sock); err == nil || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Errorf("dialControl to a server of uid 65534: %v", err)
		if c != nil {
			c.Close()
		}
	} else {
		t.Log(err)
	}
	r := &Remote{Owner: Owner{Name: "dev", Dir: dir}}
	if _, err := r.Agent().Exec(ctx, agentCommand(&Command{Argv: []string{"true"}}, ""), agent.Stdio{}); err == nil || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Errorf("exec through a server of uid 65534: %v", err)
	}
	if err := r.Stop(ctx); err == nil {
		t.Error("stop through a server of uid 65534 succeeded")
	}
	conns, n := h.received()
	if n != 0 {
		t.Errorf("the other user's server got %d bytes (%d connections)", n, conns)
	}
	t.Logf("%d connections (made to read the server's uid), no byte", conns)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("timed out")
	}
}
