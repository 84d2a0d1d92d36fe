package vlan

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// joinerEnv makes the test binary a process that joins a LAN, says so, and
// holds its port until killed: a sonix-run in miniature.
const joinerEnv = "VLAN_TEST_JOINER"

func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(joinerEnv); ok {
		os.Exit(runJoiner(spec))
	}
	os.Exit(m.Run())
}

func runJoiner(spec string) int {
	f := strings.Fields(spec) // dir grace lan vm
	grace, _ := time.ParseDuration(f[1])
	p, err := Config{Dir: f[0], Grace: grace}.Join(context.Background(), f[2], f[3])
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("joined", p.ID)
	os.Stdin.Read(make([]byte, 1)) // until killed, or the test ends
	return 0
}

// startJoiner starts a joiner process and waits until it holds its port.
func startJoiner(t *testing.T, cfg Config, lan, vm string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s", joinerEnv, cfg.Dir, cfg.Grace, lan, vm))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "joined ") {
		t.Fatalf("joiner %s: %q, %v", vm, line, err)
	}
	return cmd
}

// waitExit waits for process pid, which is not our child, to end.
func waitExit(t *testing.T, pid int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return 0
	}
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(within.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("process %d still runs after %v", pid, within)
		}
		return time.Since(start)
	}
}

// switchProcesses lists the switch processes serving LANs in dir.
func switchProcesses(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		args := strings.Split(string(cmdline), "\x00")
		if args[0] == switchProcName && bytes.Contains(cmdline, []byte("\x00"+dir+"\x00")) &&
			bytes.Contains(environ, []byte(switchEnv+"=serve\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitConnected waits until the switch shows the VMs' QEMU connections.
// Across processes there is no event to wait on, so it asks the switch
// again and again (every 10 ms, for at most wait).
func waitConnected(t *testing.T, cfg Config, lan string, vms ...string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st, err := cfg.Inspect(context.Background(), lan)
		if err != nil {
			t.Fatal(err)
		}
		up := 0
		for _, p := range st.Ports {
			for _, vm := range vms {
				if p.VM == vm && p.Connected {
					up++
				}
			}
		}
		if up == len(vms) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ports of %v not connected within %v: %+v", vms, wait, st.Ports)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dialNIC(t *testing.T, p *Port) *fakeNIC {
	t.Helper()
	c, err := net.Dial("unix", p.Socket)
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNIC{t: t, name: p.VM, mac: p.MAC, conn: c}
	n.read()
	return n
}

// The switch as its own process: one for many concurrent joiners, alive as
// long as any port is, also after its starter was SIGKILLed, and gone with
// its files a grace period after the last port.
func TestSwitchProcessLifecycle(t *testing.T) {
	const grace = 300 * time.Millisecond
	cfg := Config{Dir: filepath.Join(t.TempDir(), "vlan"), Grace: grace}
	ctx := context.Background()

	starter := startJoiner(t, cfg, "lan0", "starter")
	st, err := cfg.Inspect(ctx, "lan0")
	if err != nil {
		t.Fatal(err)
	}
	switchPID := st.PID
	if switchPID == os.Getpid() || switchPID == starter.Process.Pid {
		t.Fatalf("switch runs in pid %d: not a process of its own", switchPID)
	}

	const n = 6
	ports := make([]*Port, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ports[i], errs[i] = cfg.Join(ctx, "lan0", fmt.Sprint("vm", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	if pids := switchProcesses(t, cfg.Dir); len(pids) != 1 || pids[0] != switchPID {
		t.Fatalf("switch processes %v, want just %d", pids, switchPID)
	}

	// The starter dies without a word; the switch serves the others.
	starter.Process.Kill()
	starter.Wait()
	a, b := dialNIC(t, ports[0]), dialNIC(t, ports[1])
	waitConnected(t, cfg, "lan0", "vm0", "vm1")
	a.send(broadcast, "after-the-starter")
	b.expect(a, "after-the-starter")

	for _, p := range ports {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	took := waitExit(t, switchPID, grace+wait)
	t.Logf("switch exited %v after the last port closed (grace %v; -race adds 1 s at exit)", took, grace)
	if _, err := os.Stat(cfg.Dir); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(cfg.Dir)
		t.Fatalf("the vlan directory remains (%v): %v", err, entries)
	}

	// A lone starter SIGKILLed: its switch still ends.
	starter = startJoiner(t, cfg, "lan1", "lonely")
	st, err = cfg.Inspect(ctx, "lan1")
	if err != nil {
		t.Fatal(err)
	}
	starter.Process.Kill()
	starter.Wait()
	took = waitExit(t, st.PID, grace+wait)
	t.Logf("switch exited %v after its only joiner was SIGKILLed (grace %v)", took, grace)
	if _, err := os.Stat(cfg.Dir); !os.IsNotExist(err) {
		t.Fatalf("the vlan directory remains: %v", err)
	}
	if state := procState(st.PID); state != "" {
		t.Logf("switch process %d after exit: state %s (reaping orphans is init's job)", st.PID, state)
	}
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return string(b[i+2 : i+3])
	}
	return "?"
}
