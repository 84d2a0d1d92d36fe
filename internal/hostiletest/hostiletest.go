//go:build linux

// Package hostiletest plays another local user for real in tests that run
// as root: the test binary runs again as uid 65534 (UID) and makes
// directories, plants owner files and serves or dials sockets as that
// user. A test package using it calls Main from its TestMain.
package hostiletest

import (
	"bufio"
	"bytes"
	"encoding/json"
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

	"github.com/sonix-run/sonix-run/rundir"
)

// UID is the other user.
const UID = 65534

// Main runs the other user's side when this process is it (started by
// World.Start), else the tests.
func Main(m *testing.M) {
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
		b, _ := json.Marshal(rundir.Owner{Name: name, PID: os.Getpid(), Start: 0, Target: "/nix/store/planted", Started: time.Now()})
		f := filepath.Join(dir, "owner.json")
		if err := os.WriteFile(f, b, 0o666); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Chmod(f, 0o666)
	}
	path := rundir.ControlSocket(dir)
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

// World is a directory tree the other user can reach: the test
// binary (to run as them) and a temporary directory like /tmp (sticky,
// open to all).
type World struct {
	root, bin, tmp string
}

func NewWorld(t *testing.T) *World {
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
			t.Skipf("uid %d cannot reach %s: %v %v", UID, root, fi.Mode(), err)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	w := &World{root: root, bin: filepath.Join(root, "bin"), tmp: filepath.Join(root, "tmp")}
	os.Mkdir(w.bin, 0o755)
	os.Mkdir(w.tmp, 0o777)
	os.Chmod(w.tmp, 0o1777)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(w.bin, "test")
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

// Process is a running process of the other user.
type Process struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
}

// Start runs the test binary as uid 65534 with env (hostileMain's
// variables) and, when it serves, waits for its "ready".
func (w *World) Start(t *testing.T, env ...string) *Process {
	t.Helper()
	h := &Process{t: t}
	h.cmd = exec.Command(filepath.Join(w.bin, "test"))
	h.cmd.Dir = w.root
	h.cmd.Env = append([]string{"SONIX_TEST_HOSTILE=1", "PATH=/usr/bin:/bin", "HOME=/nonexistent"}, env...)
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: UID, Gid: UID}}
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

func (h *Process) Line() string {
	h.t.Helper()
	l, err := h.out.ReadString('\n')
	if err != nil {
		h.t.Fatalf("the other user's process: %v; stderr %q", err, h.stderr.String())
	}
	return strings.TrimSpace(l)
}

// Plant has the other user make dir with an owner file naming owner ("":
// none) and a control socket open to all, and waits until it serves.
func (w *World) Plant(t *testing.T, dir, owner string) *Process {
	t.Helper()
	h := w.Start(t, "SONIX_HOSTILE_DIR="+dir, "SONIX_HOSTILE_OWNER="+owner)
	if l := h.Line(); l != "ready" {
		t.Fatalf("the other user's process said %q; stderr %q", l, h.stderr.String())
	}
	return h
}

// Received ends a planting process and says how many connections and
// bytes its socket got.
func (h *Process) Received() (conns, n int) {
	h.t.Helper()
	io.WriteString(h.in, "report\n")
	if _, err := fmt.Sscanf(h.Line(), "conns=%d bytes=%d", &conns, &n); err != nil {
		h.t.Fatal(err)
	}
	h.cmd.Wait()
	return conns, n
}

// Wait waits for the process to end.
func (h *Process) Wait() { h.cmd.Wait() }

// Root is a directory both users can reach.
func (w *World) Root() string { return w.root }

// Tmp is a sticky directory open to all, like /tmp.
func (w *World) Tmp() string { return w.tmp }
