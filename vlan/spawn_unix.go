//go:build unix

package vlan

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
)

// switchEnv marks a process started to be a switch. Any binary that links
// this package can be one: the check runs in init, before main, so that
// sonix-run and test binaries using the harness (whose VMs also join LANs)
// need no hidden subcommand. Values: "detach" (start the switch in its own
// session and exit at once) and "serve" (be the switch).
const switchEnv = "SONIX_RUN_VLAN_SWITCH"

func init() {
	mode, ok := os.LookupEnv(switchEnv)
	if !ok {
		return
	}
	os.Unsetenv(switchEnv)
	os.Exit(switchMain(mode, os.Args[1:]))
}

// selfExe is this program's executable. On Linux /proc/self/exe still works
// when the file was replaced or deleted since (a rebuild while VMs run).
func selfExe() (string, error) {
	if runtime.GOOS == "linux" {
		return "/proc/self/exe", nil
	}
	return os.Executable()
}

// switchProcName is the switch's argv[0], which ps shows.
const switchProcName = "sonix-run-vlan-switch"

// startSwitchProcess starts the switch of p, serving ln, in a new process
// and returns once it runs (ln already accepts: a joiner can connect at
// once). The switch must outlive this process when other VMs still use the
// LAN, so it is not our child: we start a short-lived child that starts the
// switch in a new session (away from the terminal's Ctrl-C) and exits
// without waiting for it, and we wait for that child. The orphaned switch is
// reaped by init (or the nearest subreaper) when it ends.
func startSwitchProcess(ctx context.Context, p lanPaths, grace time.Duration, ln *net.UnixListener) error {
	exe, err := selfExe()
	if err != nil {
		return fmt.Errorf("vlan %q: finding this program to run the switch: %w", p.lan, err)
	}
	f, err := ln.File()
	if err != nil {
		return fmt.Errorf("vlan %q: %w", p.lan, err)
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, exe, "-dir", p.base, "-lan", p.lan, "-grace", grace.String())
	cmd.Args[0] = switchProcName
	cmd.Env = append(environWithout(switchEnv), switchEnv+"=detach")
	cmd.ExtraFiles = []*os.File{f} // fd 3
	cmd.Dir = "/"                  // pin no directory the user may want to remove
	stderr := proc.NewTail(2048)
	cmd.Stderr = stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vlan %q: starting its switch (%s): %v: %s", p.lan, exe, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func environWithout(key string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, key+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// switchMain runs the switch side of a process that switchEnv marked.
func switchMain(mode string, args []string) int {
	fs := flag.NewFlagSet(switchProcName, flag.ContinueOnError)
	dir := fs.String("dir", "", "the per-user directory of LANs")
	lan := fs.String("lan", "", "the LAN's name")
	grace := fs.Duration("grace", DefaultGrace, "how long to wait without ports before exiting")
	err := fs.Parse(args)
	if err == nil && (!filepath.IsAbs(*dir) || fs.NArg() != 0) {
		err = errors.New("-dir must be an absolute path, and nothing may follow the flags")
	}
	if err == nil {
		err = CheckName(*lan)
	}
	if err == nil {
		switch mode {
		case "detach":
			err = detachSwitch(args)
		case "serve":
			err = serveSwitch(lanPaths{base: *dir, lan: *lan}, *grace)
		default:
			err = fmt.Errorf("unknown mode %q", mode)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v (%s is set; it is meant for sonix-run's own use)\n", switchProcName, err, switchEnv)
		return 2
	}
	return 0
}

func detachSwitch(args []string) error {
	exe, err := selfExe()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = switchProcName
	cmd.Env = append(environWithout(switchEnv), switchEnv+"=serve")
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "control.sock")}
	cmd.Dir = "/"
	// Stdio stays /dev/null: a switch holding its starter's stderr pipe
	// open would keep whoever reads that pipe waiting for its end.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd.Start() // not waited for, by design (see startSwitchProcess)
}

func serveSwitch(p lanPaths, grace time.Duration) error {
	f := os.NewFile(3, "control.sock")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("fd 3 is not the control socket: %w", err)
	}
	ln, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return errors.New("fd 3 is not a Unix socket")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	return newSwitch(p, grace, ln).run(ctx)
}
