package rundir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// hostileUID is the other user of the tests that need one (as root).
const hostileUID = 65534

// privateDir is a new directory of the test's that passes the checks of a
// base (t.TempDir gives 0755).
func privateDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// listening is a control socket that never accepts: pending tells whether
// anyone connected.
type listening struct{ fd int }

func listenAt(t *testing.T, path string) *listening {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		err = syscall.Bind(fd, &syscall.SockaddrUnix{Name: path})
	}
	if err == nil {
		err = syscall.Listen(fd, 16)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return &listening{fd: fd}
}

func (l *listening) pending(t *testing.T) int {
	t.Helper()
	syscall.SetNonblock(l.fd, true)
	n := 0
	for {
		c, _, err := syscall.Accept(l.fd)
		if err != nil {
			return n
		}
		syscall.Close(c)
		n++
	}
}

// ownedRunDir makes a run directory of a live VM (this process) named
// name at dir, with a socket that records connections.
func ownedRunDir(t *testing.T, dir, name string) *listening {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	start, _ := procStart(os.Getpid())
	if err := writeOwner(dir, Owner{Name: name, PID: os.Getpid(), Start: start, Target: "planted"}); err != nil {
		t.Fatal(err)
	}
	return listenAt(t, ControlSocket(dir))
}

// Run directories that a link, that others may enter, or that belong to
// another user are ignored: not listed, not reached, not removed, and
// named in one line.
func TestRunDirsFailingChecksAreIgnored(t *testing.T) {
	xdg := privateDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	t.Setenv("TMPDIR", t.TempDir())
	good, err := Create("good", "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	socks := map[string]*listening{"link": ownedRunDir(t, elsewhere, "link")}
	if err := os.Symlink(elsewhere, filepath.Join(xdg, runDirPrefix+"link")); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(xdg, runDirPrefix+"open")
	socks["open"] = ownedRunDir(t, open, "open")
	os.Chmod(open, 0o755)
	if os.Geteuid() == 0 {
		theirs := filepath.Join(xdg, runDirPrefix+"theirs")
		socks["theirs"] = ownedRunDir(t, theirs, "theirs")
		if err := os.Chown(theirs, hostileUID, hostileUID); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("not root: no directory of another uid")
	}

	vms, notice := Reap()
	if len(vms) != 1 || vms[0].Dir != good {
		t.Errorf("Reap = %+v, want only %s", vms, good)
	}
	if strings.Contains(notice, "\n") {
		t.Errorf("notice on several lines: %q", notice)
	}
	for name := range socks {
		if !strings.Contains(notice, filepath.Join(xdg, runDirPrefix+name)+", which") {
			t.Errorf("notice %q does not name %s", notice, name)
		}
		if _, err := Find(name); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "no VM named") {
			t.Errorf("Find(%s) = %v", name, err)
		}
		if _, err := os.Lstat(filepath.Join(xdg, runDirPrefix+name)); err != nil {
			t.Errorf("%s was removed: %v", name, err)
		}
	}
	t.Log(notice)
	for name, s := range socks {
		if n := s.pending(t); n != 0 {
			t.Errorf("the socket of %s got %d connections", name, n)
		}
	}
	if _, err := os.Stat(filepath.Join(elsewhere, ownerFile)); err != nil {
		t.Errorf("the link's target was changed: %v", err)
	}
	// createRunDir neither follows nor replaces what is in the way.
	if _, err := Create("link", "mine", ""); !errors.Is(err, ErrInTheWay) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("createRunDir over a link = %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(xdg, runDirPrefix+"link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi, err)
	}
}

// An owner file that is a link is not read: the run directory holds no
// VM.
func TestOwnerFileLinkIsNotFollowed(t *testing.T) {
	xdg := privateDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	t.Setenv("TMPDIR", t.TempDir())
	elsewhere := filepath.Join(t.TempDir(), "owner")
	ownedRunDir(t, elsewhere, "dev")
	dir := filepath.Join(xdg, runDirPrefix+"dev")
	os.Mkdir(dir, 0o700)
	os.Symlink(filepath.Join(elsewhere, ownerFile), filepath.Join(dir, ownerFile))
	if vms, _ := Reap(); len(vms) != 0 {
		t.Errorf("Reap = %+v", vms)
	}
	if _, err := readOwner(dir); err == nil {
		t.Error("readOwner followed a link")
	}
}

// $XDG_RUNTIME_DIR that others may enter is not used: the run directory
// goes to the private base in $TMPDIR (made 0700), which list and
// Connect search, and the run says why once. A name whose socket paths
// do not fit under $XDG_RUNTIME_DIR goes there too, and is found.
func TestRunDirBases(t *testing.T) {
	open := filepath.Join(t.TempDir(), "rt")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o755)
	t.Setenv("XDG_RUNTIME_DIR", open)
	t.Setenv("TMPDIR", t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, err := Create("dev", "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(owndir.TempBase(), runDirPrefix+"dev"); dir != want {
		t.Errorf("run directory %s, want %s", dir, want)
	}
	if err := owndir.Check(owndir.TempBase(), owndir.Private); err != nil {
		t.Error(err)
	}
	if note := Notice(dir); !strings.Contains(note, "$XDG_RUNTIME_DIR") || !strings.Contains(note, "mode 0755") {
		t.Errorf("notice %q", note)
	}
	vms, notice := Reap()
	if len(vms) != 1 || vms[0].Dir != dir || !strings.Contains(notice, "$XDG_RUNTIME_DIR "+open+", which has mode 0755") {
		t.Errorf("Reap = %+v, %q", vms, notice)
	}
	if o, err := Find("dev"); err != nil || o.Dir != dir {
		t.Errorf("Find(dev) = %v", err)
	}
	Remove(dir)

	// A usable $XDG_RUNTIME_DIR that is long: a long name goes to $TMPDIR.
	long := filepath.Join(privateDir(t), strings.Repeat("x", 40))
	os.Mkdir(long, 0o700)
	t.Setenv("XDG_RUNTIME_DIR", long)
	name := strings.Repeat("n", maxSocketPath-len(long)-len(runDirPrefix))
	dir, err = Create(name, "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != owndir.TempBase() {
		t.Errorf("run directory of a long name: %s", dir)
	}
	if note := Notice(dir); note != "" {
		t.Errorf("notice %q", note)
	}
	if o, err := Find(name); err != nil || o.Dir != dir {
		t.Errorf("Find(long name) = %v", err)
	}
	short, err := Create("short", "mine", "")
	if err != nil || filepath.Dir(short) != long {
		t.Errorf("run directory of a short name: %s, %v", short, err)
	}
	// A run directory of a short name in $TMPDIR is not where one is
	// looked for while $XDG_RUNTIME_DIR is usable.
	stray := filepath.Join(owndir.TempBase(), runDirPrefix+"stray")
	ownedRunDir(t, stray, "stray")
	if vms, _ := Reap(); len(vms) != 2 {
		t.Errorf("Reap = %+v, want the long name and short", vms)
	}
	if _, err := Find("stray"); err == nil {
		t.Error("a run directory out of its place was found")
	}
}

// Runs racing for one name: exactly one gets the run directory, the others
// are told it is taken; none takes another's for a dead one's.
func TestRunDirRace(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", privateDir(t))
	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := Create("racer", "target", "")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "already running"):
			t.Errorf("a loser got %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d runs got the directory, want 1", won)
	}
	if o, err := readOwner(filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), runDirPrefix+"racer")); err != nil || !o.Alive() {
		t.Errorf("owner %+v, %v", o, err)
	}
}
