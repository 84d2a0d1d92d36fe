// Command sonix-run-agent is sonix-run's guest agent: it serves commands,
// file copies and poweroff requests from the host over the virtio console
// port org.sonix-run.agent (docs/protocol.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/sonix-run/sonix-run/agent/guest"
	"github.com/sonix-run/sonix-run/agent/wire"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = ""

// Exit statuses.
const (
	exitOK      = 0 // stopped by SIGTERM or SIGINT
	exitFailure = 1
	exitUsage   = 2
	exitNoPort  = 3 // the port did not appear within --wait-port
)

// Reopening the port: after a session ends, and when the host went away
// before answering the preamble (a port whose host side is not connected
// reads as end of file at once), the agent opens the port again after a
// pause, growing to at most maxRetryWait while the host stays away.
const (
	minRetryWait = 50 * time.Millisecond
	maxRetryWait = time.Second
)

const usage = `Usage: sonix-run-agent [OPTIONS]

sonix-run's guest agent. It serves commands, file copies and poweroff
requests from the host over the virtio console port org.sonix-run.agent
(docs/protocol.md), one session at a time, and starts a new session whenever
one ends. Run it as root, early in boot, as a systemd service or in the
background of an init script; it needs no network. It may be restarted at
any time: the host notices the new agent and resumes.

The guest needs /sys (to find the port), devtmpfs on /dev (the port's
device), devpts on /dev/pts (commands on a terminal) and /etc/passwd and
/etc/group (user names).

Options:
`

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		// One P: the agent only moves bytes and waits. With more, an idle
		// P spins looking for work every time a goroutine parks, and
		// under TCG that spinning (clock reads, epoll_wait) costs the
		// guest CPU that the command and the kernel need: measured, 20-35%
		// less of QEMU's CPU time for 48 MiB through exec each way.
		runtime.GOMAXPROCS(1)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func agentVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "git-" + s.Value[:12]
			}
		}
		if bi.Main.Version != "" {
			return bi.Main.Version
		}
	}
	return "devel"
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("sonix-run-agent", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.String("port", wire.PortName, "serve the virtio port with this `name`")
	device := fs.String("device", "", "serve this device or Unix socket `path` instead of looking the port up")
	waitPort := fs.Duration("wait-port", 2*time.Minute, "how long to wait for the port to appear before exiting with status 3 (0: look once)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	help := fs.BoolP("help", "h", false, "print this help and exit")
	printUsage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprint(w, usage)
		fs.PrintDefaults()
		fmt.Fprint(w, "\nExit status: 0 stopped by SIGTERM or SIGINT, 1 failure, 2 bad usage,\n3 the port did not appear within --wait-port.\n")
	}
	fs.Usage = func() { printUsage(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "sonix-run-agent: %v (see --help)\n", err)
		return exitUsage
	}
	switch {
	case *help:
		printUsage(stdout)
		return exitOK
	case *showVersion:
		fmt.Fprintf(stdout, "sonix-run-agent %s (protocol %d)\n", agentVersion(), wire.Version)
		return exitOK
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "sonix-run-agent: unexpected argument %q (see --help)\n", fs.Arg(0))
		return exitUsage
	case *port == "" && *device == "":
		fmt.Fprintln(stderr, "sonix-run-agent: --port must not be empty")
		return exitUsage
	case *waitPort < 0:
		fmt.Fprintln(stderr, "sonix-run-agent: --wait-port must not be negative")
		return exitUsage
	}

	logger := log.New(stderr, "sonix-run-agent: ", 0)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Caught rather than ignored, so that commands do not inherit ignoring
	// them: SIGHUP must not end the agent, nor SIGPIPE a log line to a
	// closed stderr.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP, syscall.SIGPIPE)

	opts := guest.Options{
		AgentVersion: agentVersion(),
		Path:         commandPath(os.Getenv("PATH")),
		Logf:         logger.Printf,
	}
	var open func(context.Context) (io.ReadWriteCloser, string, error)
	if *device != "" {
		open = func(context.Context) (io.ReadWriteCloser, string, error) {
			c, err := openDevice(*device)
			return c, *device, err
		}
	} else {
		path, err := waitForPort(ctx, "/sys", "/dev", *port, *waitPort)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			logger.Print(err)
			return exitNoPort
		}
		open = func(context.Context) (io.ReadWriteCloser, string, error) {
			c, err := openDevice(path)
			return c, path, err
		}
	}
	return serve(ctx, open, opts, logger)
}

// commandPath is the PATH of commands: the usual places, then the agent's
// own PATH (a busybox system has its programs only there).
func commandPath(own string) string {
	seen := map[string]bool{}
	var out []string
	for _, d := range strings.Split(guest.DefaultPath+":"+own, ":") {
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return strings.Join(out, ":")
}

// openDevice opens a port's device read-write, or connects to a Unix
// socket.
func openDevice(path string) (io.ReadWriteCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return net.Dial("unix", path)
	}
	return os.OpenFile(path, os.O_RDWR, 0)
}

// serve serves sessions until ctx ends.
func serve(ctx context.Context, open func(context.Context) (io.ReadWriteCloser, string, error), opts guest.Options, logger *log.Logger) int {
	wait := minRetryWait
	waiting, lastOpenErr := false, ""
	for {
		conn, path, err := open(ctx)
		switch {
		case err != nil:
			if err.Error() != lastOpenErr {
				logger.Printf("opening the port: %v", err)
				lastOpenErr = err.Error()
			}
		default:
			lastOpenErr = ""
			if !waiting {
				logger.Printf("serving %s", path)
			}
			err = guest.Serve(ctx, conn, opts)
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, guest.ErrNoHost):
				if !waiting {
					logger.Print("waiting for the host to connect")
					waiting = true
				}
			default:
				logger.Printf("session ended: %v", err)
				waiting, wait = false, minRetryWait
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			logger.Print("stopping")
			return exitOK
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}
