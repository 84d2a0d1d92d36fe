// Package testscripts holds sonix-run's end-to-end tests: CLI scripts in
// testscript's txtar format, run against the real binary. VM scripts boot the
// project's test system (examples/testsystem) under QEMU; they skip, saying
// why, only where QEMU is not installed.
package testscripts

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "sonix-run-testbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // other users run it too (nonroot.txtar)
	if prebuilt := os.Getenv("SONIX_RUN_BINARY"); prebuilt != "" {
		// The CI lanes run a binary built once, as users without Go.
		if err := os.Symlink(prebuilt, filepath.Join(dir, "sonix-run")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	} else {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "sonix-run"), "../cmd/sonix-run")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building sonix-run:", err)
			os.Exit(1)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestScripts(t *testing.T) {
	cache := t.TempDir() // shared by all scripts: the KVM probe runs once
	testscript.Run(t, testscript.Params{
		Dir:                 ".",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", binDir+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("SONIX_BIN", binDir)
			env.Setenv("XDG_CACHE_HOME", cache)
			// Each script's runs keep their run directories here, so a
			// leftover is seen (noleaks) and is the script's own.
			runtime := filepath.Join(env.WorkDir, "xdg-runtime")
			if err := os.Mkdir(runtime, 0o700); err != nil {
				return err
			}
			env.Setenv("XDG_RUNTIME_DIR", runtime)
			// The virtiofsd named for the whole run, if any
			// (SONIX_VIRTIOFSD=... go test): scripts about one flavour
			// set their own.
			if d := os.Getenv("SONIX_VIRTIOFSD"); d != "" {
				env.Setenv("SONIX_VIRTIOFSD", d)
			}
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "qemu":
				_, err := exec.LookPath("qemu-system-x86_64")
				return err == nil, nil
			case "aarch64":
				// QEMU for it and Debian's arm64 kernel and busybox.
				if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
					return false, nil
				}
				_, err := testsystem.FindInputs("aarch64")
				return err == nil, nil
			case "root":
				return os.Geteuid() == 0, nil
			case "gdb":
				_, err := exec.LookPath("gdb")
				return err == nil, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"testsystem": cmdTestsystem,
			"exitcode":   cmdExitcode,
			"noleaks":    cmdNoleaks,
			"spawn":      cmdSpawn,
			"waitout":    cmdWaitout,
			"signal":     cmdSignal,
			"reap":       cmdReap,
			"killfsd":    cmdKillfsd,
			"httpget":    cmdHttpget,
			"hostserve":  cmdHostserve,
			"waitfile":   cmdWaitfile,
		},
	})
}

// testsystem builds a fresh test system (new store hashes every time) into
// $WORK/sys and sets STORE, MODULES, MODROOT, KERNEL, TARGET, TOPLEVEL and KVER.
//
// An argument names the architecture (default x86_64).
func cmdTestsystem(ts *testscript.TestScript, neg bool, args []string) {
	arch := "x86_64"
	if len(args) > 0 {
		arch = args[0]
	}
	in, err := testsystem.FindInputs(arch)
	if err != nil {
		ts.Fatalf("test system inputs missing (run scripts/install-test-deps): %v", err)
	}
	sys, err := testsystem.Build(ts.MkAbs("sys"), in, testsystem.Options{Salt: strconv.FormatInt(time.Now().UnixNano(), 36)})
	ts.Check(err)
	ts.Setenv("STORE", sys.StoreDir)
	ts.Setenv("MODULES", sys.ModulesDir)
	ts.Setenv("MODROOT", filepath.Dir(filepath.Dir(sys.ModulesDir))) // holds lib/modules, like INSTALL_MOD_PATH
	ts.Setenv("KERNEL", in.Kernel)                                   // outside the store
	ts.Setenv("TARGET", filepath.Join(sys.Dir, "result"))
	ts.Setenv("TOPLEVEL", sys.Toplevel)
	ts.Setenv("KVER", sys.KernelVersion)
}

// exitcode [-within=DURATION] CODE PROG ARGS... runs PROG like exec and
// checks its exit status (and how long it took).
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	var within time.Duration
	if len(args) > 0 && strings.HasPrefix(args[0], "-within=") {
		d, err := time.ParseDuration(strings.TrimPrefix(args[0], "-within="))
		ts.Check(err)
		within, args = d, args[1:]
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exitcode [-within=D] CODE PROG ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	start := time.Now()
	err = ts.Exec(args[1], args[2:]...)
	took := time.Since(start)
	got := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		got = exit.ExitCode()
	} else if err != nil {
		ts.Fatalf("%v", err)
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
	if within > 0 && took > within {
		ts.Fatalf("took %v, want at most %v", took.Round(time.Millisecond), within)
	}
}

// noleaks checks that no process of this script is left (none has $WORK on
// its command line), that no run directory is left, and that the legacy
// virtiofsd left no lock file for it.
//
// With -within=DURATION it gives processes that are being killed (by the
// kernel, after a SIGKILLed parent) that long to go.
func cmdNoleaks(ts *testscript.TestScript, neg bool, args []string) {
	work := ts.Getenv("WORK")
	var within time.Duration
	if len(args) > 0 && strings.HasPrefix(args[0], "-within=") {
		d, err := time.ParseDuration(strings.TrimPrefix(args[0], "-within="))
		ts.Check(err)
		within = d
	}
	deadline := time.Now().Add(within)
	for {
		procs := processesMentioning(work)
		if len(procs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			ts.Fatalf("processes left behind:\n%s", strings.Join(procs, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime := ts.Getenv("XDG_RUNTIME_DIR")
	entries, err := os.ReadDir(runtime)
	ts.Check(err)
	for _, e := range entries {
		if e.Name() == "sonix-run-vlan" {
			// The LANs' directory stays; each switch leaves it (empty)
			// within its grace after its last VM.
			lans := filepath.Join(runtime, e.Name())
			deadline := time.Now().Add(5 * time.Second)
			for {
				left, _ := os.ReadDir(lans)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					ts.Fatalf("virtual LAN files left behind: %s/%s", lans, left[0].Name())
				}
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		ts.Fatalf("run directory left behind: %s", e.Name())
	}
	locks, _ := filepath.Glob(filepath.Join("/run/virtiofsd", strings.ReplaceAll(work+"/", "/", ".")+"*"))
	if len(locks) > 0 {
		ts.Fatalf("virtiofsd lock files left behind: %q", locks)
	}
}

// processesMentioning lists the processes with a path under dir on their
// command line.
func processesMentioning(dir string) []string {
	s := strings.TrimSuffix(dir, "/") + "/" // not dir-other, a sibling
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join(d, "stat")); err == nil && bytes.Contains(stat, []byte(") Z ")) {
			continue // a zombie is already dead
		}
		out = append(out, filepath.Base(d)+": "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return out
}

// Background runs, by name, for spawn, waitout, signal and reap.
var (
	bgMu sync.Mutex
	bg   = map[string]*bgRun{}
)

type bgRun struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func bgKey(ts *testscript.TestScript, name string) string { return ts.Getenv("WORK") + "\x00" + name }

// spawn NAME PROG ARGS... starts PROG in the background; its stdout and
// stderr go to $WORK/NAME.stdout and $WORK/NAME.stderr.
func cmdSpawn(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: spawn NAME PROG ARGS...")
	}
	name := args[0]
	path, err := exec.LookPath(args[1])
	if err != nil {
		// LookPath uses the test's PATH; the script's may differ.
		path = filepath.Join(binDir, args[1])
	}
	cmd := exec.Command(path, args[2:]...)
	cmd.Dir = ts.Getenv("WORK")
	cmd.Env = scriptEnv(ts)
	stdout, err := os.Create(ts.MkAbs(name + ".stdout"))
	ts.Check(err)
	stderr, err := os.Create(ts.MkAbs(name + ".stderr"))
	ts.Check(err)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	ts.Check(cmd.Start())
	r := &bgRun{cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(r.done)
	}()
	bgMu.Lock()
	bg[bgKey(ts, name)] = r
	bgMu.Unlock()
	ts.Defer(func() {
		cmd.Process.Kill()
		<-r.done
	})
}

func scriptEnv(ts *testscript.TestScript) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "WORK", "SONIX_VIRTIOFSD", "SONIX_APPEND"} {
		env = append(env, k+"="+ts.Getenv(k))
	}
	return env
}

func lookupBg(ts *testscript.TestScript, name string) *bgRun {
	bgMu.Lock()
	defer bgMu.Unlock()
	r := bg[bgKey(ts, name)]
	if r == nil {
		ts.Fatalf("no background run %q", name)
	}
	return r
}

// waitout [-stderr] NAME REGEXP waits (up to 3 minutes) until NAME's stdout
// (or stderr) matches.
func cmdWaitout(ts *testscript.TestScript, neg bool, args []string) {
	stream := ".stdout"
	if len(args) > 0 && args[0] == "-stderr" {
		stream, args = ".stderr", args[1:]
	}
	if len(args) != 2 {
		ts.Fatalf("usage: waitout [-stderr] NAME REGEXP")
	}
	r := lookupBg(ts, args[0])
	re := regexp.MustCompile(args[1])
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, _ := os.ReadFile(ts.MkAbs(args[0] + stream))
		if re.Match(out) {
			return
		}
		select {
		case <-r.done:
			ts.Fatalf("%s exited (%v) before its stdout matched %q:\n%s", args[0], r.err, args[1], out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s's stdout did not match %q in time:\n%s", args[0], args[1], out)
		}
	}
}

// signal NAME SIGNAL sends SIGINT, SIGTERM, SIGHUP or SIGKILL to NAME.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: signal NAME SIGNAL")
	}
	sig := map[string]syscall.Signal{"SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM, "SIGHUP": syscall.SIGHUP, "SIGKILL": syscall.SIGKILL}[args[1]]
	if sig == 0 {
		ts.Fatalf("unknown signal %q", args[1])
	}
	ts.Check(lookupBg(ts, args[0]).cmd.Process.Signal(sig))
}

// reap [-within=DURATION] NAME CODE waits for NAME to exit and checks its status.
func cmdReap(ts *testscript.TestScript, neg bool, args []string) {
	within := 3 * time.Minute
	if len(args) > 0 && strings.HasPrefix(args[0], "-within=") {
		d, err := time.ParseDuration(strings.TrimPrefix(args[0], "-within="))
		ts.Check(err)
		within, args = d, args[1:]
	}
	if len(args) != 2 {
		ts.Fatalf("usage: reap [-within=D] NAME CODE")
	}
	r := lookupBg(ts, args[0])
	want, err := strconv.Atoi(args[1])
	ts.Check(err)
	select {
	case <-r.done:
	case <-time.After(within):
		ts.Fatalf("%s did not exit within %v", args[0], within)
	}
	got := 0
	var exit *exec.ExitError
	if errors.As(r.err, &exit) {
		got = exit.ExitCode()
		if st, ok := exit.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			got = 128 + int(st.Signal())
		}
	}
	if got != want {
		stderr, _ := os.ReadFile(ts.MkAbs(args[0] + ".stderr"))
		ts.Fatalf("%s exit status %d, want %d; stderr:\n%s", args[0], got, want, stderr)
	}
}

// killfsd kills the virtiofsd processes of this script's runs.
func cmdKillfsd(ts *testscript.TestScript, neg bool, args []string) {
	n := 0
	for _, p := range processesMentioning(ts.Getenv("WORK")) {
		pid, rest, _ := strings.Cut(p, ": ")
		if strings.Contains(strings.SplitN(rest, " ", 2)[0], "virtiofsd") {
			id, _ := strconv.Atoi(pid)
			syscall.Kill(id, syscall.SIGKILL)
			n++
		}
	}
	if n == 0 {
		ts.Fatalf("no virtiofsd of this script is running")
	}
}

// httpget URL REGEXP fetches URL and checks that the body matches.
func cmdHttpget(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: httpget URL REGEXP")
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(args[0])
	ts.Check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	ts.Check(err)
	if !regexp.MustCompile(args[1]).Match(body) {
		ts.Fatalf("GET %s: %s: body %q does not match %q", args[0], resp.Status, body, args[1])
	}
}

// hostserve VAR BODY serves BODY over HTTP on the host's loopback until the
// script ends, and sets VAR to its port: a host service a guest must not
// reach unless its network lets it.
func cmdHostserve(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: hostserve VAR BODY")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, args[1]+"\n") })}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	ts.Defer(func() {
		srv.Close()
		<-done
	})
	ts.Setenv(args[0], strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
}

// waitfile PATH waits (up to 3 minutes) until PATH exists.
func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitfile PATH")
	}
	p := ts.MkAbs(args[0])
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s did not appear in time", args[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
