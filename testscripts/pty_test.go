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
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

// consoleRun is sonix-run booting the test system's shell on a pty.
type consoleRun struct {
	ptmx, tty *os.File
	cmd       *exec.Cmd
	exited    chan error
	screen    *screen
	before    *unix.Termios
	work      string
	runtime   string
}

func startOnPty(t *testing.T, args ...string) *consoleRun {
	t.Helper()
	sys := testsystem.ForTest(t, "x86_64")
	r := &consoleRun{work: t.TempDir(), exited: make(chan error, 1), screen: &screen{}}
	var err error
	r.runtime = filepath.Join(r.work, "xdg-runtime")
	os.Mkdir(r.runtime, 0o700)
	if r.ptmx, r.tty, err = pty.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ptmx.Close(); r.tty.Close() })
	if r.before, err = unix.IoctlGetTermios(int(r.tty.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"--accel", "tcg", "--store", sys.StoreDir, "--specialisation", "shell"}, args...)
	r.cmd = exec.Command(filepath.Join(binDir, "sonix-run"), append(args, filepath.Join(sys.Dir, "result"))...)
	r.cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+r.runtime)
	r.cmd.Stdin, r.cmd.Stdout, r.cmd.Stderr = r.tty, r.tty, r.tty
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() { r.cmd.Process.Kill() })
	go io.Copy(r.screen, r.ptmx)
	r.screen.waitFor(t, regexp.MustCompile(`sonix-test# `), 3*time.Minute)
	return r
}

// finish waits for the exit status and checks that the terminal modes are
// back and nothing is left behind.
func (r *consoleRun) finish(t *testing.T, wantStatus int) {
	t.Helper()
	select {
	case err := <-r.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != wantStatus {
			t.Errorf("exit: %v, want status %d", err, wantStatus)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the run did not end; screen:\n%s", r.screen.String())
	}
	after, err := unix.IoctlGetTermios(int(r.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.before, after) {
		t.Errorf("terminal modes not restored:\nbefore %+v\nafter  %+v", r.before, after)
	}
	if entries, _ := os.ReadDir(r.runtime); len(entries) > 0 {
		t.Errorf("run directory left behind: %s", entries[0].Name())
	}
	if procs := processesMentioning(r.work); len(procs) > 0 {
		t.Errorf("processes left behind: %q", procs)
	}
}

// TestInteractiveConsole runs sonix-run on a terminal, as a person would:
// a shell in the guest answers a typed command, Ctrl-a x ends the run with
// 130, and the terminal's modes are back as they were.
func TestInteractiveConsole(t *testing.T) {
	r := startOnPty(t)
	r.ptmx.Write([]byte("echo pty-$((6*7))\r"))
	r.screen.waitFor(t, regexp.MustCompile(`\npty-42\r?\n`), time.Minute)
	// Raw mode is on while the guest runs: no echo by the host's terminal.
	during, _ := unix.IoctlGetTermios(int(r.tty.Fd()), unix.TCGETS)
	if during.Lflag&unix.ECHO != 0 || during.Lflag&unix.ICANON != 0 {
		t.Errorf("the terminal is not raw while the guest runs: lflag %#x", during.Lflag)
	}
	r.ptmx.Write([]byte{0x01, 'h'}) // Ctrl-a h
	r.screen.waitFor(t, regexp.MustCompile(`Ctrl-a x +stop the VM and exit`), 10*time.Second)
	r.ptmx.Write([]byte{0x01, 'x'}) // Ctrl-a x
	r.finish(t, 130)
}

// TestHangupRestoresTerminal: a SIGHUP (the terminal went away) stops the
// run like SIGTERM does, and the terminal modes are restored on that path too.
func TestHangupRestoresTerminal(t *testing.T) {
	r := startOnPty(t, "--stop-timeout", "1s")
	r.cmd.Process.Signal(unix.SIGHUP)
	r.finish(t, 129)
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

// TestShellAndExecOnPty: `sonix-run shell NAME` gives a login shell on a
// real terminal: it answers a typed command, sees the terminal's size and
// its changes, Ctrl-C reaches the guest's process (not sonix-run), and
// exiting the shell returns its status with the terminal restored. The VM
// itself runs in the background, started with --name.
func TestShellAndExecOnPty(t *testing.T) {
	sys := testsystem.ForTest(t, "x86_64")
	work := t.TempDir()
	runtime := filepath.Join(work, "xdg-runtime")
	os.Mkdir(runtime, 0o700)
	env := append(os.Environ(), "XDG_RUNTIME_DIR="+runtime)
	bin := filepath.Join(binDir, "sonix-run")

	var vmOut screen
	vm := exec.Command(bin, "--accel", "tcg", "--store", sys.StoreDir, "--name", "ptyvm", "--stop-timeout", "5s", filepath.Join(sys.Dir, "result"))
	vm.Env, vm.Stdout, vm.Stderr = env, &vmOut, &vmOut
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	vmDone := make(chan error, 1)
	go func() { vmDone <- vm.Wait() }()
	t.Cleanup(func() {
		vm.Process.Kill()
		select { // already read when the test saw the VM end
		case <-vmDone:
		case <-time.After(30 * time.Second):
		}
	})
	vmOut.waitFor(t, regexp.MustCompile(`sonix-test: starting the agent`), 3*time.Minute)

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 31, Cols: 97}); err != nil {
		t.Fatal(err)
	}
	before, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	shell := exec.Command(bin, "shell", "ptyvm")
	shell.Env = env
	shell.Stdin, shell.Stdout, shell.Stderr = tty, tty, tty
	shell.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true}
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	shellDone := make(chan error, 1)
	go func() { shellDone <- shell.Wait() }()
	var scr screen
	go io.Copy(&scr, ptmx)

	ptmx.Write([]byte("echo shell-$((6*7)); stty size\r"))
	scr.waitFor(t, regexp.MustCompile(`shell-42\r?\n31 97`), time.Minute)
	pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}) // the terminal is resized
	ptmx.Write([]byte("sleep 0.5; stty size\r"))
	scr.waitFor(t, regexp.MustCompile(`\n40 120`), time.Minute)
	// Ctrl-C ends the guest's foreground process; the shell goes on.
	ptmx.Write([]byte("sleep 1000\r"))
	time.Sleep(500 * time.Millisecond) // let the guest's shell start sleep: there is no event to wait on
	ptmx.Write([]byte{0x03})
	ptmx.Write([]byte("echo after-$((1+1))\r"))
	scr.waitFor(t, regexp.MustCompile(`after-2`), time.Minute)
	ptmx.Write([]byte("exit 3\r"))
	select {
	case err := <-shellDone:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Errorf("sonix-run shell: %v, want status 3; screen:\n%s", err, scr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("sonix-run shell did not end; screen:\n%s", scr.String())
	}
	after, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("terminal modes not restored:\nbefore %+v\nafter  %+v", before, after)
	}

	// The VM stops on `sonix-run stop`, leaving nothing.
	stop := exec.Command(bin, "stop", "ptyvm")
	stop.Env = env
	if out, err := stop.CombinedOutput(); err != nil {
		t.Errorf("sonix-run stop: %v: %s", err, out)
	}
	select {
	case err := <-vmDone:
		if err != nil {
			t.Errorf("the VM's run: %v\n%s", err, vmOut.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the VM did not end after sonix-run stop")
	}
	if entries, _ := os.ReadDir(runtime); len(entries) > 0 {
		t.Errorf("run directory left behind: %s", entries[0].Name())
	}
}
