//go:build linux

package harness

// VM-free tests of what another local user, or a guest, could otherwise
// do to the test's host: artifacts written through planted links or into
// someone else's directory, and a console or a command's output that eats
// the test's memory.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/owndir"
)

// someArtifacts is what writeArtifacts writes for a VM named name: a
// console with a line and a line in progress, a command.
func someArtifacts(t *testing.T, name string) (config.Config, *console, *commandLog) {
	t.Helper()
	c := newConsole(nil)
	t.Cleanup(c.release)
	c.Write([]byte("booted\r\nhalf a line"))
	log := newCommandLog(c.begin)
	e := log.start("exec", `"true"`)
	e.stdout(nil).Write([]byte("out\n"))
	e.finish(0, nil)
	return config.Config{Name: name, Target: "/sys/toplevel"}, c, log
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// The attack on the old shared place: another user makes
// $TMPDIR/sonix-artifacts/<the next test's directory>/ and plants
// NAME.console.log there, a link to a file of the victim's. The artifacts
// now go to the user's private directory; the planted link is not
// followed, the victim's file is unchanged.
func TestArtifactsIgnorePlantedLink(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv(ArtifactsEnv, "")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	shared := filepath.Join(tmp, "sonix-artifacts")
	planted := filepath.Join(shared, fmt.Sprintf("TestPlant-20250102-030405-%d", os.Getpid()))
	if err := os.MkdirAll(planted, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"vm-1.console.log", "vm-1.commands.log", "vm-1.reproduce.sh"} {
		if err := os.Symlink(victim, filepath.Join(planted, l)); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 { // as the other user would have it
		for _, p := range []string{shared, planted} {
			os.Chmod(p, 0o777)
			os.Lchown(p, 65534, 65534)
		}
	}

	dir, err := makeArtifactsDir("", "TestPlant", now)
	if err != nil {
		t.Fatal(err)
	}
	cfg, c, log := someArtifacts(t, "vm-1")
	if err := writeArtifacts(dir, cfg, c, log, "", "ended"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the planted link was followed: the victim's file holds %q", b)
	}
	private := filepath.Join(owndir.TempBase(), "artifacts")
	if filepath.Dir(dir) != private {
		t.Errorf("artifacts in %s, want a directory in %s", dir, private)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "vm-1.console.log")); err != nil || !strings.Contains(string(b), "s] booted\n") {
		t.Errorf("console.log: %q %v", b, err)
	}
	if entries, _ := os.ReadDir(planted); len(entries) != 3 {
		t.Errorf("the shared directory was written: %v", entries)
	}
}

// A name taken in the directory (a link, or the files of an earlier VM of
// the same name) is never written through or over: the next name is used.
func TestArtifactsNameTaken(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	if err := os.Symlink(victim, filepath.Join(dir, "vm.commands.log")); err != nil {
		t.Fatal(err)
	}
	cfg, c, log := someArtifacts(t, "vm")
	for i := 0; i < 2; i++ {
		if err := writeArtifacts(dir, cfg, c, log, "", "ended"); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the link was followed: %q", b)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := "vm.2.commands.log vm.2.console.log vm.2.reproduce.sh vm.3.commands.log vm.3.console.log vm.3.reproduce.sh vm.commands.log"
	if strings.Join(names, " ") != want {
		t.Errorf("files %v, want %s", names, want)
	}
	// A name that is no VM name (a VM that failed to start for it) does
	// not leave the directory.
	cfg.Name = "../../escape"
	if err := writeArtifacts(dir, cfg, c, log, "", "ended"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape.console.log")); err != nil {
		t.Errorf("a bad name's artifacts: %v", err)
	}
}

// The directories are 0700, the files 0600 and the reproduce script 0700,
// whatever the umask.
func TestArtifactsModes(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	for _, umask := range []int{0, 0o022, 0o277} {
		old := syscall.Umask(umask)
		dir, err := makeArtifactsDir("", "TestModes", time.Now())
		var werr error
		if err == nil {
			cfg, c, log := someArtifacts(t, "vm")
			werr = writeArtifacts(dir, cfg, c, log, "", "ended")
		}
		syscall.Umask(old)
		if err != nil || werr != nil {
			t.Fatalf("umask %04o: %v %v", umask, err, werr)
		}
		for path, want := range map[string]fs.FileMode{
			owndir.TempBase():                     fs.ModeDir | 0o700,
			filepath.Dir(dir):                     fs.ModeDir | 0o700,
			dir:                                   fs.ModeDir | 0o700,
			filepath.Join(dir, "vm.console.log"):  0o600,
			filepath.Join(dir, "vm.commands.log"): 0o600,
			filepath.Join(dir, "vm.reproduce.sh"): 0o700,
		} {
			if got := mode(t, path); got != want {
				t.Errorf("umask %04o: %s has mode %v, want %v", umask, path, got, want)
			}
		}
	}
}

// $SONIX_ARTIFACTS is the user's choice: made (0700) when missing, used
// when it is theirs and no one else may write it, refused otherwise.
func TestArtifactsEnvChecked(t *testing.T) {
	base := t.TempDir()
	made := filepath.Join(base, "new", "artifacts")
	dir, err := makeArtifactsDir(made, "TestEnv", time.Now())
	if err != nil || filepath.Dir(dir) != made || mode(t, made) != fs.ModeDir|0o700 || mode(t, dir) != fs.ModeDir|0o700 {
		t.Errorf("a missing $%s: %s %v", ArtifactsEnv, dir, err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	link := filepath.Join(base, "link")
	os.Symlink(made, link)
	for _, c := range []struct{ dir, reason string }{
		{open, "has mode 0777"},
		{link, "is a symbolic link"},
	} {
		_, err := makeArtifactsDir(c.dir, "TestEnv", time.Now())
		if err == nil || !strings.Contains(err.Error(), "refusing $"+ArtifactsEnv+" ("+c.dir+"): it "+c.reason) {
			t.Errorf("$%s=%s: %v", ArtifactsEnv, c.dir, err)
		}
	}
	if entries, _ := os.ReadDir(open); len(entries) != 0 {
		t.Errorf("a refused directory was written: %v", entries)
	}
}

// As root: a $SONIX_ARTIFACTS, or a private base in the temporary
// directory, that another user made is refused with a message, and
// nothing is written into it.
func TestArtifactsOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to make a directory that belongs to another uid")
	}
	theirs := filepath.Join(t.TempDir(), "theirs")
	os.Mkdir(theirs, 0o755)
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ArtifactsEnv, theirs)
	_, _, err := artifactsFor(t).directory(t.Name())
	want := fmt.Sprintf("artifacts: refusing $%s (%s): it belongs to uid 65534, not to you (uid 0), so another user could plant links or swap files in it", ArtifactsEnv, theirs)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("$%s of uid 65534: %v\nwant %s...", ArtifactsEnv, err, want)
	} else {
		t.Log(err)
	}

	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if err := os.Mkdir(owndir.TempBase(), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(owndir.TempBase(), 0o777)
	os.Chown(owndir.TempBase(), 65534, 65534)
	_, err = makeArtifactsDir("", "TestTheirs", time.Now())
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") || !strings.Contains(err.Error(), ArtifactsEnv) {
		t.Errorf("a private base of uid 65534: %v", err)
	}
	for _, d := range []string{theirs, owndir.TempBase()} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s was written: %v", d, entries)
		}
	}
}

// consoleLog is what the console's artifact holds.
func consoleLog(t *testing.T, c *console) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := c.writeTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkBounded checks what the console keeps in memory.
func checkBounded(t *testing.T, c *console) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) > consoleKeepLines || c.bytes > consoleKeepBytes || len(c.partial) > consoleLineMax {
		t.Errorf("the console keeps %d lines, %d bytes and %d bytes in progress", len(c.lines), c.bytes, len(c.partial))
	}
}

// 100k lines: memory keeps the last ones, WaitFor sees those and what
// comes later, the log file has every line.
func TestConsoleKeepsATail(t *testing.T) {
	c := newConsole(nil)
	defer c.release()
	w := bufio.NewWriterSize(c, 4096) // as the console comes: in chunks
	const n = 100000
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "line %06d\r\n", i)
	}
	w.Flush()
	checkBounded(t, c)
	if c.first != n-consoleKeepLines || len(c.lines) != consoleKeepLines {
		t.Errorf("kept lines %d from %d, want the last %d", len(c.lines), c.first, consoleKeepLines)
	}
	if got := strings.Join(c.tail(2), "|"); got != "line 099998|line 099999" {
		t.Errorf("tail: %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if line, err := c.waitFor(ctx, regexp.MustCompile(`^line \d+9999$`)); err != nil || line != "line 099999" {
		t.Errorf("waitFor among the kept lines: %q %v", line, err)
	}
	got := make(chan string)
	go func() {
		line, _ := c.waitFor(ctx, regexp.MustCompile(`^after`))
		got <- line
	}()
	c.Write([]byte("after the flood\n"))
	if line := <-got; line != "after the flood" {
		t.Errorf("waitFor of a line to come: %q", line)
	}

	sc := bufio.NewScanner(bytes.NewReader(consoleLog(t, c)))
	i := 0
	for ; sc.Scan() && i < n; i++ {
		if line := sc.Text(); !strings.HasPrefix(line, "[") || !strings.HasSuffix(line, fmt.Sprintf("s] line %06d", i)) {
			t.Fatalf("log line %d: %q", i, line)
		}
	}
	if i != n || !strings.HasSuffix(sc.Text(), "s] after the flood") || sc.Scan() {
		t.Errorf("the log has %d lines of %d, then %q", i, n, sc.Text())
	}

	// Long lines: the bytes bound.
	line := strings.Repeat("y", 4000) + "\n"
	for i := 0; i < 2000; i++ {
		c.Write([]byte(line))
	}
	checkBounded(t, c)
	if c.bytes < consoleKeepBytes-4000 {
		t.Errorf("kept %d bytes, want about %d", c.bytes, consoleKeepBytes)
	}
}

// writeNoNewline writes n bytes without a newline, in chunks of size
// chunk, and returns how long that took.
func writeNoNewline(c *console, n, chunkSize int) time.Duration {
	chunk := bytes.Repeat([]byte("x"), chunkSize)
	began := time.Now()
	for ; n > 0; n -= len(chunk) {
		c.Write(chunk[:min(n, len(chunk))])
	}
	return time.Since(began)
}

// A line without a newline is not scanned again as it grows: writing
// 8 MiB of it takes about 8 times as long as 1 MiB (a rescan, as before,
// made it 64 times). Each is measured as a benchmark, so that the ratio
// is of averages over many runs, not a wall-clock threshold. The chunks
// are small, as a serial console's are, so that a rescan's cost shows
// over the constant costs of each write (the rescan is a fast memchr).
func TestConsoleLongLineLinear(t *testing.T) {
	perRun := func(size int) time.Duration {
		r := testing.Benchmark(func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				c := newConsole(nil)
				b.StartTimer()
				writeNoNewline(c, size, 512)
				b.StopTimer()
				c.release()
			}
		})
		return time.Duration(r.NsPerOp())
	}
	// On a loaded machine one measure can be off: a linear console
	// passes at one of three tries (about 8; rescans made it 64 each time).
	var tries []string
	for len(tries) < 3 {
		small, big := perRun(1<<20), perRun(8<<20)
		ratio := float64(big) / float64(small)
		tries = append(tries, fmt.Sprintf("1 MiB: %v, 8 MiB: %v, ratio %.1f", small, big, ratio))
		if ratio <= 24 {
			t.Log(strings.Join(tries, "; "))
			return
		}
	}
	t.Errorf("8 times the bytes took more than 24 times as long, each time: not linear (%s)", strings.Join(tries, "; "))
}

// 32 MiB without a newline: memory stays bounded, the line is cut into
// pieces, WaitFor matches a line that comes after it, and the log file
// holds the whole line.
func TestConsoleNoNewline(t *testing.T) {
	const size = 32 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newConsole(nil)
	defer c.release()
	took := writeNoNewline(c, size, 4096)
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("32 MiB without a newline: %v, heap grew by %d KiB", took, (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("the heap grew by %d MiB for a console of 32 MiB", grew>>20)
	}
	checkBounded(t, c)
	if tail := c.tail(1); len(tail) != 1 || len(tail[0]) != consoleLineMax+len(" [no newline yet]") {
		t.Errorf("the line in progress in messages: %d lines, %d bytes", len(tail), len(tail[0]))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.Write([]byte("xx\r\nlogin: "))
	if line, err := c.waitFor(ctx, regexp.MustCompile(`^x+$`)); err != nil || len(line) != consoleLineMax {
		t.Errorf("a piece of the long line: %d bytes, %v", len(line), err)
	}
	got := make(chan string)
	go func() {
		line, _ := c.waitFor(ctx, regexp.MustCompile(`^login: ready$`))
		got <- line
	}()
	c.Write([]byte("ready\n"))
	if line := <-got; line != "login: ready" {
		t.Errorf("waitFor of a line after the long one: %q", line)
	}
	checkBounded(t, c)
	runtime.KeepAlive(c)

	log := consoleLog(t, c)
	lines := strings.Split(strings.TrimSuffix(string(log), "\n"), "\n")
	re := regexp.MustCompile(`^\[ *\d+\.\d{3}s\] `)
	if len(lines) != 2 || !re.MatchString(lines[0]) || !re.MatchString(lines[1]) ||
		re.ReplaceAllString(lines[0], "") != strings.Repeat("x", size+2) || re.ReplaceAllString(lines[1], "") != "login: ready" {
		t.Errorf("the log holds %d lines, the first of %d bytes", len(lines), len(lines[0]))
	}

	// A line in progress that was cut ends the log on its own line.
	c.Write(bytes.Repeat([]byte("z"), consoleLineMax+10))
	if log := consoleLog(t, c); !bytes.HasSuffix(log, append(append([]byte("s] "), bytes.Repeat([]byte("z"), consoleLineMax+10)...), " [no newline]\n"...)) {
		t.Errorf("the log ends %q", log[max(0, len(log)-40):])
	}
}

func BenchmarkConsoleNoNewline(b *testing.B) {
	for _, size := range []int{1 << 20, 8 << 20, 32 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				c := newConsole(nil)
				writeNoNewline(c, size, 4096)
				c.release()
			}
		})
	}
}

// Without its file, the console's artifact says so and holds the kept
// lines.
func TestConsoleWithoutFile(t *testing.T) {
	c := newConsole(nil)
	c.Write([]byte("one\ntwo\nthr"))
	c.release()
	want := "[the whole console is not here (the console's file was closed when its test ended): these are the last 2 lines, 0 before them are lost]\n"
	if log := string(consoleLog(t, c)); !strings.HasPrefix(log, want) || !strings.HasSuffix(log, "s] two\n[  at end ] thr [no newline]\n") {
		t.Errorf("log: %q", log)
	}
}

// socketPair is a connected pair of Unix stream sockets, as a virtio
// port's socket is on the host.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return conns[0], conns[1]
}

// agentVM is a VM without a machine: the real guest agent runs on this
// host, at the other end of a socket pair. Only the calls that do not
// reach the launcher's instance (Run, Exec and Stream when the agent
// answers, or when the output limit ends the command) work on it.
func agentVM(t *testing.T) *VM {
	t.Helper()
	hostConn, guestConn := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- guest.Serve(ctx, guestConn, guest.Options{}) }()
	l := agent.NewLink(hostConn, agent.LinkOptions{})
	c := newConsole(nil)
	t.Cleanup(func() {
		l.Close()
		cancel()
		<-served
		c.release()
	})
	return &VM{m: &machine{agent: agent.NewClient(l.Dial), console: c, log: newCommandLog(c.begin)}}
}

// Run and Exec keep at most the output limit of each stream: past it, the
// command is ended and the error says how much came, the status, and how
// to raise the limit. Stream's writers are not bounded.
func TestOutputLimit(t *testing.T) {
	vm := agentVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	small := vm.WithOutputLimit(64 << 10)
	if vm.limit() != DefaultOutputLimit || small.WithTimeout(time.Second).limit() != 64<<10 || small.WithOutputLimit(0).limit() != DefaultOutputLimit {
		t.Errorf("limits: %d %d", vm.limit(), small.WithTimeout(time.Second).limit())
	}

	res, err := small.Exec(ctx, "head", "-c", "65536", "/dev/zero")
	if err != nil || res.Status != 0 || len(res.Stdout) != 64<<10 {
		t.Errorf("output of the limit exactly: %d bytes, status %d, %v", len(res.Stdout), res.Status, err)
	}
	res, err = small.Run(ctx, "head -c 65537 /dev/zero")
	var le *OutputLimitError
	if !errors.As(err, &le) || le.Stream != "stdout" || le.Limit != 64<<10 || le.Received < 65537 || le.Status != res.Status || len(res.Stdout) != 64<<10 {
		t.Errorf("one byte past the limit: %d bytes, status %d, %#v", len(res.Stdout), res.Status, err)
	}

	res, err = small.Run(ctx, "echo starting; yes >&2")
	if !errors.As(err, &le) || le.Stream != "stderr" || res.Status != 128+int(syscall.SIGTERM) || string(res.Stdout) != "starting\n" {
		t.Errorf("yes on stderr: status %d, stdout %q, %v", res.Status, res.Stdout, err)
	}
	wantMessage(t, "yes past the limit", fmt.Sprint(err), `running "echo starting; yes >&2": its stderr passed the output limit of 64 KiB: it printed at least `,
		"bytes there, so the harness ended it (exit status 143); the result holds the first 65536 bytes. Raise the limit with vm.WithOutputLimit(n)", "Stream")
	var cmds strings.Builder
	vm.m.log.writeTo(&cmds)
	wantMessage(t, "the command log", cmds.String(), "exec \"echo starting; yes >&2\"\n           error after ", "passed the output limit of 64 KiB")

	var out bytes.Buffer
	if st, err := small.Stream(ctx, agent.Command{Shell: "head -c 200000 /dev/zero"}, nil, &out, nil); err != nil || st != 0 || out.Len() != 200000 {
		t.Errorf("Stream past the limit: %d bytes, status %d, %v", out.Len(), st, err)
	}

	res, err = vm.Run(ctx, fmt.Sprintf("head -c %d /dev/zero", DefaultOutputLimit+1))
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "the output limit of 16 MiB") || len(res.Stdout) != DefaultOutputLimit {
		t.Errorf("past the default limit: %d bytes, %v", len(res.Stdout), err)
	}
}
