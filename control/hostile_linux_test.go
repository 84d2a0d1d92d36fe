package control

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/internal/hostiletest"
	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/rundir"
)

func TestMain(m *testing.M) { hostiletest.Main(m) }

// serve answers every request on the control socket of dir with OK, as
// the run's server does for info.
func serve(t *testing.T, dir string) {
	t.Helper()
	l, err := Listen(rundir.ControlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if _, _, err := ReadRequest(c, 5*time.Second); err != nil {
				WriteReply(c, Reply{Error: err.Error()})
			} else {
				WriteReply(c, Reply{OK: true})
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

// With $XDG_RUNTIME_DIR set, run directories are found there: a planted
// base in $TMPDIR with a "dev" and an "evil" is never read or dialled,
// and the real "dev" is the one reached.
func TestPlantedTempBaseWithXDG(t *testing.T) {
	w := hostiletest.NewWorld(t)
	xdg := t.TempDir()
	os.Chmod(xdg, 0o700)
	t.Setenv("TMPDIR", w.Tmp())
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	base := owndir.TempBase()
	h1 := w.Plant(t, filepath.Join(base, "sonix-run-dev"), "dev")
	h2 := w.Plant(t, filepath.Join(base, "sonix-run-evil"), "evil")

	dir, err := rundir.Create("dev", "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != xdg {
		t.Errorf("run directory %s, want one in $XDG_RUNTIME_DIR", dir)
	}
	serve(t, dir)
	vms, notice := rundir.Reap()
	if len(vms) != 1 || vms[0].Name != "dev" || vms[0].Target != "mine" {
		t.Errorf("Reap = %+v", vms)
	}
	t.Logf("notice: %s", notice)
	vm, err := Connect("dev")
	if err != nil || vm.Owner.Dir != dir {
		t.Fatalf("Connect(dev) = %+v, %v", vm, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := vm.dial(ctx, Request{Op: OpInfo})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := Connect("evil"); !errors.Is(err, rundir.ErrNotRunning) {
		t.Errorf("Connect(evil) = %v", err)
	}
	for _, h := range []*hostiletest.Process{h1, h2} {
		if conns, n := h.Received(); conns != 0 || n != 0 {
			t.Errorf("a planted socket got %d connections, %d bytes", conns, n)
		}
	}
}

// The client sends nothing to a control socket that is not the user's, or
// that a process of another uid serves (even one whose socket file was
// made to look like the user's).
func TestClientRefusesServerOfAnotherUID(t *testing.T) {
	w := hostiletest.NewWorld(t)
	dir := filepath.Join(w.Tmp(), "theirs")
	h := w.Plant(t, dir, "dev")
	sock := rundir.ControlSocket(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := dial(ctx, sock); err == nil || !strings.Contains(err.Error(), "not a socket of yours") {
		t.Errorf("dial to the other user's socket: %v", err)
		if c != nil {
			c.Close()
		}
	}
	// Their server behind a socket file that looks like ours: the peer's
	// uid still tells.
	if err := os.Lchown(sock, 0, 0); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(ctx, sock); err == nil || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Errorf("dial to a server of uid 65534: %v", err)
		if c != nil {
			c.Close()
		}
	} else {
		t.Log(err)
	}
	vm := &VM{Owner: rundir.Owner{Name: "dev", Dir: dir}}
	if _, err := vm.Agent().Exec(ctx, agent.Command{Argv: []string{"true"}}, agent.Stdio{}); err == nil || !strings.Contains(err.Error(), "served by uid 65534") {
		t.Errorf("exec through a server of uid 65534: %v", err)
	}
	if err := vm.Stop(ctx); err == nil {
		t.Error("stop through a server of uid 65534 succeeded")
	}
	conns, n := h.Received()
	if n != 0 {
		t.Errorf("the other user's server got %d bytes (%d connections)", n, conns)
	}
	t.Logf("%d connections (made to read the server's uid), no byte", conns)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("timed out")
	}
}

// A peer of the same user is served; the server's checks run first.
func TestReadRequest(t *testing.T) {
	dir := t.TempDir()
	l, err := Listen(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, _ := os.Lstat(filepath.Join(dir, "s")); fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v", fi.Mode())
	}
	go func() {
		c, err := net.Dial("unix", filepath.Join(dir, "s"))
		if err == nil {
			io.WriteString(c, `{"op":"forward","forward":{"Proto":"tcp","HostPort":1,"GuestPort":2}}`+"\n"+strings.Repeat("rest", MaxRequest))
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, r, err := ReadRequest(c, 5*time.Second)
	if err != nil || req.Op != OpForward || req.Forward == nil || req.Forward.GuestPort != 2 {
		t.Fatalf("ReadRequest = %+v, %v", req, err)
	}
	// All of it, past the request's own bound: a command's stdin follows.
	rest, _ := io.ReadAll(r)
	if string(rest) != strings.Repeat("rest", MaxRequest) {
		t.Errorf("after the line: %d bytes, want %d", len(rest), 4*MaxRequest)
	}
}
