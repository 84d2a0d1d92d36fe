package launcher

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/control"
	"github.com/sonix-run/sonix-run/internal/hostiletest"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

func TestMain(m *testing.M) { hostiletest.Main(m) }

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
	w := hostiletest.NewWorld(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := filepath.Join(w.Root(), "run")
	os.Mkdir(dir, 0o700)
	i := serveControl(t, dir)
	sock := rundir.ControlSocket(dir)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, %v; want mode 0600", fi.Mode(), err)
	}
	// Open the way for the other user, as a careless umask or a swapped
	// directory would: only the peer check stands.
	os.Chmod(dir, 0o755)
	os.Chmod(sock, 0o777)
	h := w.Start(t, "SONIX_HOSTILE_CONNECT="+sock, `SONIX_HOSTILE_SEND={"op":"stop"}`+"\n")
	reply := h.Line()
	want := `reply: {"ok":false,"error":"refused: this VM's control socket serves uid 0 only, not uid 65534"}`
	if !strings.HasPrefix(reply, want) {
		t.Errorf("the other user got %q\nwant %q", reply, want)
	}
	h.Wait()
	select {
	case r := <-i.stopReq:
		t.Errorf("the other user's stop was done: %+v", r)
	default:
	}
	// The run's own user is served.
	vm := &control.VM{Owner: rundir.Owner{Name: "dev", Dir: dir, PID: os.Getpid()}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- vm.Stop(ctx) }()
	select {
	case <-i.stopReq:
	case <-ctx.Done():
		t.Error("the owner's stop was not asked for")
	}
	i.ctl.close(context.Background()) // the run ends: Stop returns
	if err := <-stopped; err != nil {
		t.Errorf("Stop: %v", err)
	}
}
