package nixbuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nix is started like every other child of sonix-run: when sonix-run is
// killed outright (SIGKILL, nothing runs after), nix dies with it instead of
// building on as an orphan.
func TestNixDiesWithSonixRun(t *testing.T) {
	if os.Getenv("NIXBUILD_TEST_CHILD") != "" {
		Build(context.Background(), ".#vm", nil) // killed by the parent test while nix runs
		return
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	os.WriteFile(filepath.Join(dir, "nix"), []byte("#!/bin/sh\necho $$ > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"\nexec /bin/sleep 600\n"), 0o755)
	child := exec.Command(os.Args[0], "-test.run=^TestNixDiesWithSonixRun$")
	child.Env = append(os.Environ(), "NIXBUILD_TEST_CHILD=1", "PATH="+dir+":/usr/bin:/bin")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var nixPID int
	for nixPID == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			nixPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			child.Process.Kill()
			child.Wait()
			t.Fatal("the fake nix never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	for alive(nixPID) {
		if time.Now().After(deadline) {
			syscall.Kill(nixPID, syscall.SIGKILL)
			t.Fatalf("nix (pid %d) outlived the sonix-run that started it", nixPID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive says whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
