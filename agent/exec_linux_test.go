//go:build linux

package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/guest"
)

// run runs cmd and returns its status, stdout and stderr.
func run(t *testing.T, c *agent.Client, cmd agent.Command, stdin io.Reader) (int, string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := c.Exec(testContext(t, time.Minute), cmd, agent.Stdio{Stdin: stdin, Stdout: &out, Stderr: &errb})
	return st, out.String(), errb.String(), err
}

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestStdinToStdoutExact(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	all := make([]byte, 0, 256*4)
	for r := 0; r < 4; r++ {
		for i := 0; i < 256; i++ {
			all = append(all, byte(i))
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"20MB-random", randomBytes(20<<20, 1)},
		{"all-256-byte-values", all},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := sha256.New()
			var errb bytes.Buffer
			start := time.Now()
			st, err := p.client.Exec(testContext(t, 2*time.Minute), agent.Command{Argv: []string{"cat"}},
				agent.Stdio{Stdin: bytes.NewReader(tc.data), Stdout: h, Stderr: &errb})
			if err != nil || st != 0 {
				t.Fatalf("status %d, err %v, stderr %q", st, err, errb.String())
			}
			if got, want := h.Sum(nil), sha256.Sum256(tc.data); !bytes.Equal(got, want[:]) {
				t.Fatalf("stdout's sha256 %x, want %x", got, want)
			}
			t.Logf("%d bytes through cat in %v", len(tc.data), time.Since(start))
		})
	}
	// Exact bytes, not just a digest, for the 256 values.
	st, out, _, err := run(t, p.client, agent.Command{Argv: []string{"cat"}}, bytes.NewReader(all))
	if err != nil || st != 0 || out != string(all) {
		t.Fatalf("status %d err %v: the 256 byte values did not come back exactly", st, err)
	}
}

func TestStdoutAndStderrApart(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	st, out, errs, err := run(t, p.client, agent.Command{
		Shell: `i=0; while [ $i -lt 2000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`,
	}, nil)
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v", st, err)
	}
	var wantOut, wantErr strings.Builder
	for i := 0; i < 2000; i++ {
		wantOut.WriteString("out " + strconv.Itoa(i) + "\n")
		wantErr.WriteString("err " + strconv.Itoa(i) + "\n")
	}
	if out != wantOut.String() || errs != wantErr.String() {
		t.Fatalf("stdout and stderr mixed up: %d and %d bytes, want %d and %d", len(out), len(errs), wantOut.Len(), wantErr.Len())
	}
}

func TestExitStatuses(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	for _, tc := range []struct {
		shell string
		want  int
	}{
		{"exit 0", 0}, {"exit 1", 1}, {"exit 7", 7}, {"exit 255", 255},
		{"kill -9 $$", 137}, {"kill -TERM $$", 143}, {"kill -USR1 $$", 138},
	} {
		st, _, errs, err := run(t, p.client, agent.Command{Shell: tc.shell}, nil)
		if err != nil || st != tc.want {
			t.Errorf("%q: status %d, err %v, stderr %q; want %d", tc.shell, st, err, errs, tc.want)
		}
	}
}

func TestArgvExact(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	args := []string{"a b", `'q"`, "ünïcödé ☃", "", "x\ty\nz", "$HOME", "*", "-n", `\`, "\x01\xff"}
	st, out, errs, err := run(t, p.client, agent.Command{Argv: append([]string{"printf", `%s\0`}, args...)}, nil)
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v, stderr %q", st, err, errs)
	}
	got := strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
	if len(got) != len(args) {
		t.Fatalf("got %q, want %q", got, args)
	}
	for i := range args {
		if got[i] != args[i] {
			t.Errorf("argument %d: got %q, want %q", i, got[i], args[i])
		}
	}
}

func TestEnvironment(t *testing.T) {
	checkGoroutines(t)
	t.Setenv("SONIX_AGENT_LEAK", "leaked")
	p := newPair(t, guest.Options{})
	st, out, _, err := run(t, p.client, agent.Command{Argv: []string{"env"}, Env: []string{"FOO=bar baz", "EMPTY=", "PATH=/usr/bin:/bin", "FOO=last"}}, nil)
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v", st, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := env[k]; dup {
			t.Errorf("%s given twice", k)
		}
		env[k] = v
	}
	if _, ok := env["SONIX_AGENT_LEAK"]; ok {
		t.Error("the agent's own environment leaked into the command")
	}
	for k, want := range map[string]string{"FOO": "last", "EMPTY": "", "PATH": "/usr/bin:/bin", "HOME": "/root"} {
		if got, ok := env[k]; !ok || got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if _, ok := env["TERM"]; ok {
		t.Error("TERM set without a terminal")
	}
}

func TestWorkingDirectory(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	dir := t.TempDir()
	st, out, _, err := run(t, p.client, agent.Command{Argv: []string{"pwd"}, Dir: dir}, nil)
	if err != nil || st != 0 || out != dir+"\n" {
		t.Fatalf("status %d, err %v, pwd %q, want %q", st, err, out, dir)
	}
	st, out, _, err = run(t, p.client, agent.Command{Argv: []string{"pwd"}}, nil)
	if err != nil || st != 0 || out != "/\n" {
		t.Fatalf("default directory: status %d, err %v, pwd %q, want /", st, err, out)
	}
	st, _, _, err = run(t, p.client, agent.Command{Argv: []string{"pwd"}, Dir: dir + "/missing"}, nil)
	var g *agent.GuestError
	if st != 125 || !errors.As(err, &g) || !strings.Contains(err.Error(), "working directory") {
		t.Fatalf("missing directory: status %d, err %v; want 125 and a message about the working directory", st, err)
	}
	_, _, _, err = run(t, p.client, agent.Command{Argv: []string{"pwd"}, Dir: "relative"}, nil)
	if err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("relative directory: err %v", err)
	}
}

func TestUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	for _, tc := range []struct{ user, want string }{
		{"nobody", "65534 65534 /nonexistent"},
		{"12345", "12345 12345 /"},
		{"12345:23456", "12345 23456 /"},
		{"nobody:0", "65534 0 /nonexistent"},
		{"root", "0 0 /root"},
	} {
		st, out, errs, err := run(t, p.client, agent.Command{Shell: `echo "$(id -u) $(id -g) $HOME"`, User: tc.user}, nil)
		if err != nil || st != 0 || strings.TrimSpace(out) != tc.want {
			t.Errorf("user %s: status %d, err %v, stderr %q, got %q, want %q", tc.user, st, err, errs, out, tc.want)
		}
	}
	// Supplementary groups: nobody has exactly its own group.
	st, out, _, err := run(t, p.client, agent.Command{Argv: []string{"id", "-G"}, User: "nobody"}, nil)
	if err != nil || st != 0 || strings.TrimSpace(out) != "65534" {
		t.Errorf("nobody's groups: %q (status %d, err %v)", out, st, err)
	}
	st, _, _, err = run(t, p.client, agent.Command{Argv: []string{"id"}, User: "no-such-user"}, nil)
	if st != 125 || err == nil || !strings.Contains(err.Error(), `user "no-such-user": not found`) {
		t.Errorf("unknown user: status %d, err %v", st, err)
	}
	_, _, _, err = run(t, p.client, agent.Command{Argv: []string{"id"}, User: "bad user"}, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot") {
		t.Errorf("malformed user: err %v", err)
	}
}

func TestCannotStart(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	st, _, _, err := run(t, p.client, agent.Command{Argv: []string{"no-such-program-xyz"}}, nil)
	var g *agent.GuestError
	if st != 127 || !errors.As(err, &g) || g.Status != 127 || !strings.Contains(err.Error(), `"no-such-program-xyz": not found`) {
		t.Fatalf("missing program: status %d, err %v", st, err)
	}
	notExec := t.TempDir() + "/script"
	os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644)
	st, _, _, err = run(t, p.client, agent.Command{Argv: []string{notExec}}, nil)
	if st != 126 || err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("not executable: status %d, err %v", st, err)
	}
	st, _, _, err = run(t, p.client, agent.Command{Argv: []string{"/"}}, nil)
	if st != 126 || err == nil {
		t.Fatalf("a directory: status %d, err %v", st, err)
	}
	// The shell's own 127 is an ordinary exit status.
	st, _, errs, err := run(t, p.client, agent.Command{Shell: "no-such-program-xyz"}, nil)
	if st != 127 || err != nil || !strings.Contains(errs, "not found") {
		t.Fatalf("missing program under sh -c: status %d, err %v, stderr %q", st, err, errs)
	}
}

var ptsName = regexp.MustCompile(`^/dev/pts/[0-9]+\r\n$`)

func TestTerminal(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	st, out, _, err := run(t, p.client, agent.Command{Argv: []string{"tty"}, TTY: true}, nil)
	if err != nil || st != 0 || !ptsName.MatchString(out) {
		t.Fatalf("tty: status %d, err %v, output %q", st, err, out)
	}
	st, out, _, err = run(t, p.client, agent.Command{Shell: `stty size; echo "$TERM"; [ -t 0 ] && [ -t 2 ] && echo all-tty`, TTY: true, Rows: 30, Cols: 100}, nil)
	if err != nil || st != 0 || out != "30 100\r\nxterm\r\nall-tty\r\n" {
		t.Fatalf("stty size: status %d, err %v, output %q", st, err, out)
	}
	// Input on a terminal (echoed as it arrives), and the end of input as
	// the EOF character, which ends cat.
	st, out, _, err = run(t, p.client, agent.Command{Argv: []string{"cat"}, TTY: true}, strings.NewReader("typed\n"))
	if err != nil || st != 0 || out != "typed\r\ntyped\r\n" {
		t.Fatalf("input: status %d, err %v, output %q", st, err, out)
	}
}

// lineWatcher is a Writer that reports when a line matching a pattern has
// been written.
type lineWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, seen: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestTerminalResize(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	// A resize sends SIGWINCH to the terminal's foreground process group.
	out := newLineWatcher("30 100\r\n")
	resize := make(chan agent.WinSize)
	done := make(chan error, 1)
	var st int
	go func() {
		var err error
		st, err = p.client.Exec(testContext(t, time.Minute), agent.Command{
			Shell: `trap 'stty size; kill $! 2>/dev/null; exit 0' WINCH; stty size; sleep 60 & wait`,
			TTY:   true, Rows: 30, Cols: 100,
		}, agent.Stdio{Stdout: out, Resize: resize})
		done <- err
	}()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("ended before the first size: %v, output %q", err, out)
	}
	resize <- agent.WinSize{Rows: 40, Cols: 120}
	if err := <-done; err != nil || st != 0 || out.String() != "30 100\r\n40 120\r\n" {
		t.Fatalf("status %d, err %v, output %q", st, err, out)
	}
}

func TestSignal(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	out := newLineWatcher("ready")
	sig := make(chan int)
	done := make(chan error, 1)
	var st int
	go func() {
		var err error
		st, err = p.client.Exec(testContext(t, time.Minute), agent.Command{
			Shell: `trap 'echo got-int; exit 3' INT; echo ready; sleep 60 & wait`,
		}, agent.Stdio{Stdout: out, Signal: sig})
		done <- err
	}()
	<-out.seen
	sig <- 2 // SIGINT
	if err := <-done; err != nil || st != 3 || out.String() != "ready\ngot-int\n" {
		t.Fatalf("status %d, err %v, output %q", st, err, out)
	}
}

func TestCancelThenNext(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := newLineWatcher("tick\ntick\n")
	go func() {
		<-out.seen
		cancel()
	}()
	start := time.Now()
	st, err := p.client.Exec(ctx, agent.Command{Shell: "while :; do echo tick; done", KillGrace: time.Second}, agent.Stdio{Stdout: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled command: status %d, err %v; want context.Canceled", st, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the cancelled command took %v to return", d)
	}
	for i := 0; i < 3; i++ {
		st, o, e, err := run(t, p.client, agent.Command{Shell: "echo next-" + strconv.Itoa(i)}, nil)
		if err != nil || st != 0 || o != "next-"+strconv.Itoa(i)+"\n" || e != "" {
			t.Fatalf("the next command: status %d, err %v, stdout %q, stderr %q", st, err, o, e)
		}
	}
}

func TestCancelEscalatesToSIGKILL(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	marker := t.TempDir() + "/pid"
	ctx, cancel := context.WithCancel(context.Background())
	out := newLineWatcher("ready")
	go func() {
		<-out.seen
		cancel()
	}()
	start := time.Now()
	_, err := p.client.Exec(ctx, agent.Command{
		Shell:     `trap '' TERM; echo $$ > ` + marker + `; echo ready; while :; do sleep 0.05; done`,
		KillGrace: 300 * time.Millisecond,
	}, agent.Stdio{Stdout: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2300*time.Millisecond {
		t.Errorf("returned after %v; the grace was 300ms", d)
	}
	b, _ := os.ReadFile(marker)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("no pid in %s", marker)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("process %d, which ignored SIGTERM, still runs", pid)
	}
	st, o, _, err := run(t, p.client, agent.Command{Argv: []string{"echo", "after"}}, nil)
	if err != nil || st != 0 || o != "after\n" {
		t.Fatalf("after: %d %v %q", st, err, o)
	}
}

func TestConcurrentExecs(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := randomBytes(2<<20, int64(i))
			h := sha256.New()
			var errb bytes.Buffer
			st, err := p.client.Exec(testContext(t, time.Minute), agent.Command{
				Shell: "cat; echo err-" + strconv.Itoa(i) + " >&2; exit " + strconv.Itoa(10+i),
			}, agent.Stdio{Stdin: bytes.NewReader(data), Stdout: h, Stderr: &errb})
			want := sha256.Sum256(data)
			if err != nil || st != 10+i || !bytes.Equal(h.Sum(nil), want[:]) || errb.String() != "err-"+strconv.Itoa(i)+"\n" {
				t.Errorf("exec %d: status %d, err %v, stderr %q, digest match %v", i, st, err, errb.String(), bytes.Equal(h.Sum(nil), want[:]))
			}
		}()
	}
	wg.Wait()
}

func TestUnreadStdin(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	st, _, _, err := run(t, p.client, agent.Command{Argv: []string{"true"}}, bytes.NewReader(make([]byte, 20<<20)))
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v", st, err)
	}
	// And a command that closes its input early.
	st, out, _, err := run(t, p.client, agent.Command{Shell: "head -c 5; exec 0<&-; echo; echo done"}, bytes.NewReader(make([]byte, 20<<20)))
	if err != nil || st != 0 || out != "\x00\x00\x00\x00\x00\ndone\n" {
		t.Fatalf("status %d, err %v, out %q", st, err, out)
	}
}

// slowWriter takes its time over every write, as a slow terminal would.
type slowWriter struct {
	w     io.Writer
	delay time.Duration
}

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	return s.w.Write(p)
}

func TestSlowReaderGetsEverything(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	data := randomBytes(4<<20, 7)
	h := sha256.New()
	st, err := p.client.Exec(testContext(t, 2*time.Minute), agent.Command{Argv: []string{"cat"}},
		agent.Stdio{Stdin: bytes.NewReader(data), Stdout: slowWriter{h, 2 * time.Millisecond}})
	want := sha256.Sum256(data)
	if err != nil || st != 0 || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("status %d, err %v, digest match %v", st, err, bytes.Equal(h.Sum(nil), want[:]))
	}
}

func TestBackgroundProcessDoesNotHoldTheExit(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	start := time.Now()
	st, out, _, err := run(t, p.client, agent.Command{Shell: "echo first; (sleep 3; echo late) &"}, nil)
	if err != nil || st != 0 || out != "first\n" {
		t.Fatalf("status %d, err %v, out %q", st, err, out)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v: the exit waited for the background process", d)
	}
}

func TestStdinInterruptedAfterExit(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	// An os.Pipe end is pollable: Exec stops its Read when the command has
	// ended, waits for it, and clears the deadline.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	st, _, _, err := run(t, p.client, agent.Command{Argv: []string{"true"}}, r)
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v", st, err)
	}
	w.Write([]byte("still usable"))
	buf := make([]byte, 64)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "still usable" {
		t.Fatalf("the pipe after Exec: %q, %v", buf[:n], err)
	}
}

func TestStdinThatCannotBeInterrupted(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	// io.Pipe has no deadline: Exec returns without waiting for the Read,
	// which ends when the pipe does (checkGoroutines sees it end).
	r, w := io.Pipe()
	defer w.Close()
	done := make(chan struct{})
	var st int
	var err error
	go func() {
		st, _, _, err = run(t, p.client, agent.Command{Argv: []string{"true"}}, r)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Exec waited for a Stdin that never returns")
	}
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v", st, err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestOutputWriteFailureEndsTheCommand(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	st, err := p.client.Exec(testContext(t, time.Minute), agent.Command{Shell: "while :; do echo x; done", KillGrace: time.Second},
		agent.Stdio{Stdout: failingWriter{}})
	if err == nil || !strings.Contains(err.Error(), "disk full") || st != 143 {
		t.Fatalf("status %d, err %v; want 143 (SIGTERM) and the write's error", st, err)
	}
}

// TestReaderGoneIsTheReadersChoice: output whose reader went away (a
// closed pipe: EPIPE, io.ErrClosedPipe) is not an error, as in a shell
// pipeline: the command gets EPIPE (SIGPIPE) in the guest as it would
// locally, its other output goes on, and its status is what Exec returns.
func TestReaderGoneIsTheReadersChoice(t *testing.T) {
	checkGoroutines(t)
	p := newPair(t, guest.Options{})
	// stdout into a pipe whose reader takes 10 bytes and closes it, as
	// "| head -c 10" does.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	read := make(chan []byte, 1)
	go func() {
		b := make([]byte, 10)
		n, _ := io.ReadFull(r, b)
		r.Close()
		read <- b[:n]
	}()
	var errb bytes.Buffer
	start := time.Now()
	st, err := p.client.Exec(testContext(t, time.Minute), agent.Command{
		Shell: `head -c 50000000 /dev/zero; echo "head: $?" >&2; echo end >&2`,
	}, agent.Stdio{Stdout: w, Stderr: &errb})
	if err != nil || st != 0 || errb.String() != "head: 141\nend\n" {
		t.Fatalf("status %d, err %v, stderr %q; want 0, nil and head killed by SIGPIPE (141)", st, err, errb.String())
	}
	if b := <-read; len(b) != 10 {
		t.Fatalf("the reader got %d bytes", len(b))
	}
	t.Logf("took %v", time.Since(start))

	// stderr into an io.Pipe whose reader has gone: the shell writing there
	// dies of SIGPIPE; its stdout came whole.
	pr, pw := io.Pipe()
	pr.Close()
	var out bytes.Buffer
	st, err = p.client.Exec(testContext(t, time.Minute), agent.Command{
		Shell: `echo out; while :; do echo err >&2; done`,
	}, agent.Stdio{Stdout: &out, Stderr: pw})
	if err != nil || st != 141 || out.String() != "out\n" {
		t.Fatalf("status %d, err %v, stdout %q; want 141 (SIGPIPE), nil, \"out\"", st, err, out.String())
	}
}

func TestPowerOffAnswersFirst(t *testing.T) {
	checkGoroutines(t)
	called := make(chan struct{}, 1)
	p := newPair(t, guest.Options{PowerOff: func() error {
		called <- struct{}{}
		return nil
	}})
	if err := p.client.PowerOff(testContext(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("the guest did not power off after answering")
	}
}
