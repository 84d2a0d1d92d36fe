package launcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/vmm"
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
	return listenAt(t, filepath.Join(dir, controlSocket))
}

// Run directories that a link, that others may enter, or that belong to
// another user are ignored: not listed, not reached, not removed, and
// named in one line.
func TestRunDirsFailingChecksAreIgnored(t *testing.T) {
	xdg := privateDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	t.Setenv("TMPDIR", t.TempDir())
	good, err := createRunDir("good", "mine", "")
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

	vms, notice := Running()
	if len(vms) != 1 || vms[0].Dir != good {
		t.Errorf("Running = %+v, want only %s", vms, good)
	}
	if strings.Contains(notice, "\n") {
		t.Errorf("notice on several lines: %q", notice)
	}
	for name := range socks {
		if !strings.Contains(notice, filepath.Join(xdg, runDirPrefix+name)+", which") {
			t.Errorf("notice %q does not name %s", notice, name)
		}
		if _, err := Connect(name); ReasonOf(err) != BadInput || !strings.Contains(err.Error(), "no VM named") {
			t.Errorf("Connect(%s) = %v", name, err)
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
	if _, err := createRunDir("link", "mine", ""); ReasonOf(err) != BadInput || !strings.Contains(err.Error(), "symbolic link") {
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
	if vms := List(); len(vms) != 0 {
		t.Errorf("List = %+v", vms)
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
	dir, err := createRunDir("dev", "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(owndir.TempBase(), runDirPrefix+"dev"); dir != want {
		t.Errorf("run directory %s, want %s", dir, want)
	}
	if err := owndir.Check(owndir.TempBase(), owndir.Private); err != nil {
		t.Error(err)
	}
	notes := placeNotices(dir)
	if len(notes) != 1 || !strings.Contains(notes[0], "$XDG_RUNTIME_DIR") || !strings.Contains(notes[0], "mode 0755") {
		t.Errorf("notices %q", notes)
	}
	vms, notice := Running()
	if len(vms) != 1 || vms[0].Dir != dir || !strings.Contains(notice, "$XDG_RUNTIME_DIR "+open+", which has mode 0755") {
		t.Errorf("Running = %+v, %q", vms, notice)
	}
	if r, err := Connect("dev"); err != nil || r.Owner.Dir != dir {
		t.Errorf("Connect(dev) = %v", err)
	}
	removeRunDir(dir)

	// A usable $XDG_RUNTIME_DIR that is long: a long name goes to $TMPDIR.
	long := filepath.Join(privateDir(t), strings.Repeat("x", 40))
	os.Mkdir(long, 0o700)
	t.Setenv("XDG_RUNTIME_DIR", long)
	name := strings.Repeat("n", maxSocketPath-len(long)-len(runDirPrefix))
	dir, err = createRunDir(name, "mine", "")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != owndir.TempBase() {
		t.Errorf("run directory of a long name: %s", dir)
	}
	if notes := placeNotices(dir); len(notes) != 0 {
		t.Errorf("notices %q", notes)
	}
	if r, err := Connect(name); err != nil || r.Owner.Dir != dir {
		t.Errorf("Connect(long name) = %v", err)
	}
	short, err := createRunDir("short", "mine", "")
	if err != nil || filepath.Dir(short) != long {
		t.Errorf("run directory of a short name: %s, %v", short, err)
	}
	// A run directory of a short name in $TMPDIR is not where one is
	// looked for while $XDG_RUNTIME_DIR is usable.
	stray := filepath.Join(owndir.TempBase(), runDirPrefix+"stray")
	ownedRunDir(t, stray, "stray")
	if vms := List(); len(vms) != 2 {
		t.Errorf("List = %+v, want the long name and short", vms)
	}
	if _, err := Connect("stray"); err == nil {
		t.Error("a run directory out of its place was found")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Nix's build sandbox: HOME=/homeless-shelter (missing), no
// $XDG_RUNTIME_DIR or $XDG_CACHE_HOME, a fresh $TMPDIR. A run finds a place
// for its run directory and the cache, and says where the cache is in one
// line, once.
func TestSandboxShape(t *testing.T) {
	if _, err := os.Stat("/homeless-shelter"); err == nil {
		t.Skip("/homeless-shelter exists here")
	}
	cfg, b := fakeSystem(t)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/homeless-shelter")
	t.Setenv("TMPDIR", t.TempDir())
	var stderr lockedBuffer
	cfg.Stderr = &stderr
	seen := make(chan []Owner, 1)
	b.onStart = func(m *fakeMachine) {
		seen <- List()
		m.end(vmm.PoweredOff)
	}
	if err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	vms := <-seen
	if len(vms) != 1 || filepath.Dir(vms[0].Dir) != owndir.TempBase() {
		t.Errorf("running: %+v, want one in %s", vms, owndir.TempBase())
	}
	var cache []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "cach") {
			cache = append(cache, l)
		}
	}
	want := "sonix-run: caching in " + filepath.Join(owndir.TempBase(), "cache") + ": "
	if len(cache) != 1 || !strings.HasPrefix(cache[0], want) {
		t.Errorf("stderr %q: want one line starting %q", stderr.String(), want)
	}
	t.Logf("stderr: %q", stderr.String())
	if entries, _ := os.ReadDir(owndir.TempBase()); len(entries) != 1 || entries[0].Name() != "cache" {
		t.Errorf("left in %s: %v", owndir.TempBase(), entries)
	}
}
