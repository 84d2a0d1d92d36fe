//go:build linux && (amd64 || arm64)

package virtiofs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/internal/proc"
)

// The test binary, run with guardProbeEnv set to a directory, is a stand-in
// daemon that makes each call the filter is about there, and prints what
// came of it, one "name: result" line each.
const guardProbeEnv = "SONIX_GUARD_PROBE"

func init() {
	if dir := os.Getenv(guardProbeEnv); dir != "" {
		guardProbe(dir)
		os.Exit(0)
	}
}

func guardProbe(dir string) {
	p := func(name string) string { return filepath.Join(dir, name) }
	say := func(what string, err error) {
		r := "ok"
		if e, ok := err.(syscall.Errno); ok {
			r = unix.ErrnoName(e)
		} else if err != nil {
			r = err.Error()
		}
		fmt.Printf("%s: %s\n", what, r)
	}
	create := func(name string, mode uint32) error {
		fd, err := unix.Open(p(name), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, mode)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	unix.Umask(0)
	// chmod, every way.
	say("create plain", create("plain", 0o644))
	say("chmod 4755", unix.Chmod(p("plain"), 0o4755))
	say("chmod 2755", unix.Fchmodat(unix.AT_FDCWD, p("plain"), 0o2755, 0))
	fd, _ := unix.Open(p("plain"), unix.O_RDONLY, 0)
	say("fchmod 6755", unix.Fchmod(fd, 0o6755))
	say("fchmod 0755", unix.Fchmod(fd, 0o755))
	say("fchmod 1755", unix.Fchmod(fd, 0o1755))
	unix.Close(fd)
	cwd := unix.AT_FDCWD
	_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(cwd), ptr(p("plain")), 0o4755, 0, 0, 0)
	say("fchmodat2 4755", errOf(e))
	// Creating with the bits.
	say("open 4755", create("created4755", 0o4755))
	say("open 2755", create("created2755", 0o2755))
	say("open 0755", create("created0755", 0o755))
	tfd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY, 0o4755)
	if err == nil {
		unix.Close(tfd)
	}
	say("O_TMPFILE 4755", err)
	how := unix.OpenHow{Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}
	ofd, err := unix.Openat2(unix.AT_FDCWD, p("openat2"), &how)
	if err == nil {
		unix.Close(ofd)
	}
	say("openat2", err)
	// Devices, FIFOs, whiteouts.
	say("mknod chr", unix.Mknod(p("chr"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
	say("mknod blk", unix.Mknodat(unix.AT_FDCWD, p("blk"), unix.S_IFBLK|0o644, int(unix.Mkdev(7, 0))))
	say("mknod fifo", unix.Mknod(p("fifo"), unix.S_IFIFO|0o644, 0))
	say("mknod reg 4755", unix.Mknod(p("regsuid"), unix.S_IFREG|0o4755, 0))
	say("rename whiteout", unix.Renameat2(unix.AT_FDCWD, p("created0755"), unix.AT_FDCWD, p("renamed"), unix.RENAME_WHITEOUT))
	say("rename", unix.Renameat2(unix.AT_FDCWD, p("created0755"), unix.AT_FDCWD, p("renamed"), 0))
	// Owners: other ids do nothing; the owner's, and -1, are done.
	uid, gid := os.Geteuid(), os.Getegid()
	say("chown 1234", unix.Chown(p("plain"), 1234, 1234))
	say("lchown 1234", unix.Lchown(p("plain"), 1234, -1))
	say("fchownat 1234", unix.Fchownat(unix.AT_FDCWD, p("plain"), -1, 1234, 0))
	say("chown own", unix.Chown(p("plain"), uid, gid))
	// Taking a guest user's ids: does nothing.
	_, _, e = unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 1234, ^uintptr(0))
	say("setresuid 1234", errOf(e))
	_, _, e = unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), 1234, ^uintptr(0))
	say("setresgid 1234", errOf(e))
	fmt.Printf("euid after: %d\negid after: %d\n", unix.Geteuid(), unix.Getegid())
	if runtime.GOARCH == "amd64" {
		// x32's chmod (its number with bit 30 set).
		_, _, e = unix.Syscall(0x40000000|unix.SYS_CHMOD, ptr(p("plain")), 0o4755, 0)
		say("x32 chmod", errOf(e))
	}
}

func ptr(s string) uintptr {
	b, _ := unix.BytePtrFromString(s)
	return uintptr(unsafe.Pointer(b))
}

func errOf(e syscall.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

// probeUnder runs the probe in a new directory, under g (nil: no filter),
// and returns its output and the directory.
func probeUnder(t *testing.T, g *guard) (string, string) {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), guardProbeEnv+"="+dir, "GORACE=atexit_sleep_ms=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if g != nil {
		err = startGuarded(cmd, g)
	} else {
		err = proc.Start(cmd)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("probe: %v\n%s", err, out.String())
	}
	return out.String(), dir
}

// The filter, for real: every call it is about, made under it. Run as root
// it shows the most (a root daemon could otherwise do all of them); as a
// user, what the kernel refuses anyway is refused all the same.
func TestGuard(t *testing.T) {
	own := ids{uint32(os.Geteuid()), uint32(os.Getegid())}
	out, dir := probeUnder(t, &guard{owner: own, noOpenat2: true})
	want := map[string]string{
		"create plain":    "ok",
		"chmod 4755":      "EPERM",
		"chmod 2755":      "EPERM",
		"fchmod 6755":     "EPERM",
		"fchmod 0755":     "ok",
		"fchmod 1755":     "ok", // sticky is no privilege
		"fchmodat2 4755":  "EPERM",
		"open 4755":       "EPERM",
		"open 2755":       "EPERM",
		"open 0755":       "ok",
		"O_TMPFILE 4755":  "EPERM",
		"openat2":         "ENOSYS",
		"mknod chr":       "EPERM",
		"mknod blk":       "EPERM",
		"mknod fifo":      "ok",
		"mknod reg 4755":  "EPERM",
		"rename whiteout": "EPERM",
		"rename":          "ok",
		"chown 1234":      "ok",
		"lchown 1234":     "ok",
		"fchownat 1234":   "ok",
		"chown own":       "ok",
		"setresuid 1234":  "ok",
		"setresgid 1234":  "ok",
		"euid after":      fmt.Sprint(own.uid),
		"egid after":      fmt.Sprint(own.gid),
	}
	if runtime.GOARCH == "amd64" {
		want["x32 chmod"] = "EPERM"
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		got[k] = v
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
	if t.Failed() {
		t.Logf("the probe printed:\n%s", out)
	}
	// What is left: no setid bit, no device, nothing of another owner.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, e.Name()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o6000 != 0 || st.Mode&unix.S_IFMT == unix.S_IFCHR || st.Mode&unix.S_IFMT == unix.S_IFBLK || st.Uid != own.uid || st.Gid != own.gid {
			t.Errorf("left %s: mode %o, owner %d:%d", e.Name(), st.Mode, st.Uid, st.Gid)
		}
	}
	for _, name := range []string{"plain", "fifo", "renamed"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s was not made: %v", name, err)
		}
	}

	// Unprivileged, the daemon keeps openat2 (it is not chrooted).
	out, _ = probeUnder(t, &guard{owner: own})
	if !strings.Contains(out, "\nopenat2: ok\n") {
		t.Errorf("openat2 without noOpenat2:\n%s", out)
	}
}

// Without the filter the same calls land: the test tests something.
func TestGuardControl(t *testing.T) {
	out, dir := probeUnder(t, nil)
	if !strings.Contains(out, "\nchmod 4755: ok\n") {
		t.Errorf("chmod 4755 failed without the filter:\n%s", out)
	}
	if os.Geteuid() == 0 {
		st, err := os.Lstat(filepath.Join(dir, "chr"))
		if err != nil || st.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("root made no device node without the filter: %v", err)
		}
	}
}

// Every daemon of a writable share is forked from the filtered thread, and
// its children (its own threads too) inherit the filter.
func TestGuardIsInherited(t *testing.T) {
	own := ids{uint32(os.Geteuid()), uint32(os.Getegid())}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `sh -c 'touch "$1/f" && chmod 4755 "$1/f"' sh "$1"; echo "status $?"; grep Seccomp: /proc/self/status`, "sh", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := startGuarded(cmd, &guard{owner: own}); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if !strings.Contains(out.String(), "status 1") || !strings.Contains(out.String(), "Seccomp:\t2") {
		t.Errorf("a grandchild's chmod 4755 was not refused, or no filter:\n%s", out.String())
	}
	// sonix-run's other threads have none: this one, and all but the
	// spawners' (one per filter: this test's, TestGuard's two).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status, _ := os.ReadFile("/proc/thread-self/status")
	if !bytes.Contains(status, []byte("\nSeccomp:\t0\n")) {
		t.Errorf("the test's thread is filtered:\n%s", status)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	filtered := 0
	for _, task := range tasks {
		if b, _ := os.ReadFile(task); bytes.Contains(b, []byte("\nSeccomp:\t2\n")) {
			filtered++
		}
	}
	spawnersMu.Lock()
	n := len(spawners)
	spawnersMu.Unlock()
	if filtered != n {
		t.Errorf("%d of %d threads are filtered, want %d (the spawners')", filtered, len(tasks), n)
	}
}
