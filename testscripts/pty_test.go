package testscripts

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

// TestInteractiveConsole runs sonix-run on a terminal, as a person would:
// a shell in the guest answers a typed command, Ctrl-a x ends the run with
// 130, and the terminal's modes are back as they were.
func TestInteractiveConsole(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("QEMU is not installed")
	}
	in, err := testsystem.FindInputs("x86_64")
	if err != nil {
		t.Fatalf("test system inputs missing (run scripts/install-test-deps): %v", err)
	}
	work := t.TempDir()
	sys, err := testsystem.Build(filepath.Join(work, "sys"), in, testsystem.Options{Salt: strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		t.Fatal(err)
	}
	runtime := filepath.Join(work, "xdg-runtime")
	os.Mkdir(runtime, 0o700)

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(filepath.Join(binDir, "sonix-run"), "--accel", "tcg", "--store", sys.StoreDir, "--specialisation", "shell", filepath.Join(sys.Dir, "result"))
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	screen := &screen{}
	go io.Copy(screen, ptmx)
	screen.waitFor(t, regexp.MustCompile(`sonix-test# `), 3*time.Minute)
	ptmx.Write([]byte("echo pty-$((6*7))\r"))
	screen.waitFor(t, regexp.MustCompile(`\npty-42\r?\n`), time.Minute)

	// Raw mode is on while the guest runs: no echo by the host's terminal.
	during, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if during.Lflag&unix.ECHO != 0 || during.Lflag&unix.ICANON != 0 {
		t.Errorf("the terminal is not raw while the guest runs: lflag %#x", during.Lflag)
	}

	ptmx.Write([]byte{0x01, 'x'}) // Ctrl-a x
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 130 {
			t.Errorf("exit: %v, want status 130", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Ctrl-a x did not end the run; screen:\n%s", screen.String())
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("terminal modes not restored:\nbefore %+v\nafter  %+v", before, after)
	}
	if entries, _ := os.ReadDir(runtime); len(entries) > 0 {
		t.Errorf("run directory left behind: %s", entries[0].Name())
	}
	if procs := processesMentioning(work); len(procs) > 0 {
		t.Errorf("processes left behind: %q", procs)
	}
}

// screen collects what the terminal shows.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *screen) waitFor(t *testing.T, re *regexp.Regexp, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !re.MatchString(s.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("the screen never showed %q:\n%s", re, s.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
