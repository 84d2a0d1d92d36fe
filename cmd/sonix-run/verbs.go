package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/control"
	"github.com/sonix-run/sonix-run/internal/termsafe"
	"github.com/sonix-run/sonix-run/launcher"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

// verbFlags is a verb's flag set, with --help: the one place that parses
// a verb's command line and prints its help and usage errors. Flags come
// before NAME.
type verbFlags struct {
	*pflag.FlagSet
	verb, usage string
	help        *bool
}

func newVerb(verb, usage string) *verbFlags {
	fs := pflag.NewFlagSet("sonix-run "+verb, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {} // errors say "Try ... --help" instead of dumping it
	fs.SetInterspersed(false)
	v := &verbFlags{FlagSet: fs, verb: verb, usage: usage}
	v.help = fs.BoolP("help", "h", false, "show this help")
	return v
}

// parse parses args; done is true when the verb has nothing more to do
// (its help was printed, or a usage error), with the exit status.
func (v *verbFlags) parse(args []string, stdout, stderr io.Writer) (code int, done bool) {
	v.SetOutput(stderr)
	if err := v.Parse(args); err != nil {
		return usageError(stderr, " "+v.verb, "%v", err), true
	}
	if *v.help {
		fmt.Fprint(stdout, v.usage)
		v.SetOutput(stdout)
		v.PrintDefaults()
		return exitOK, true
	}
	return 0, false
}

// verbContext is cancelled by the first SIGINT/SIGTERM/SIGHUP, which the
// command in the guest then gets (the agent stops it).
func verbContext() (context.Context, func()) {
	ctx, stop := signal.NotifyContext(context.Background(), launcher.StopSignals...)
	signal.Ignore(syscall.SIGPIPE)
	return ctx, stop
}

const execUsage = `Usage: sonix-run exec [OPTIONS] NAME [--] COMMAND [ARG...]

Run a command in the running VM NAME (started with sonix-run, e.g. with
--name NAME) through its guest agent. Its stdout and stderr are sonix-run's,
a stdin that is not a terminal is its stdin, and sonix-run exits with its
status (128+N when a signal N killed it). The words are run as they are;
use sh -c '...' for a shell command line.

Examples:
  sonix-run exec dev -- uname -r
  sonix-run exec dev sh -c 'dmesg | tail'
  sonix-run exec -t dev -- top              on a pseudo-terminal
  tar c . | sonix-run exec dev -- tar x -C /tmp

Options:
`

func cmdExec(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("exec", execUsage)
	tty := fs.BoolP("tty", "t", false, "run the command on a pseudo-terminal (stdin must be a terminal)")
	user := fs.StringP("user", "u", "", "run as `USER` (a name or a numeric uid[:gid]) instead of root")
	dir := fs.StringP("workdir", "w", "", "run in `DIR` (default /)")
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	rest := fs.Args()
	if len(rest) > 1 && rest[1] == "--" {
		rest = append(rest[:1:1], rest[2:]...)
	}
	if len(rest) < 2 {
		return usageError(stderr, " exec", "expected NAME and a COMMAND")
	}
	cmd := agent.Command{Argv: rest[1:], User: *user, Dir: *dir, TTY: *tty}
	return remoteExec(rest[0], cmd, "exec -t", stdin, stdout, stderr)
}

const shellUsage = `Usage: sonix-run shell [OPTIONS] NAME

A login shell in the running VM NAME, on a pseudo-terminal (bash where the
guest has it, else sh). Exit the shell to return.

Options:
`

func cmdShell(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("shell", shellUsage)
	user := fs.StringP("user", "u", "", "log in as `USER` instead of root")
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, " shell", "expected one NAME")
	}
	cmd := agent.Command{Shell: `if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi`, User: *user, TTY: true}
	return remoteExec(fs.Arg(0), cmd, "shell", stdin, stdout, stderr)
}

func remoteExec(name string, cmd agent.Command, what string, stdin *os.File, stdout, stderr io.Writer) int {
	vm, err := control.Connect(name)
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, stop := verbContext()
	defer stop()
	status, err := execIn(ctx, vm, cmd, what, stdin, stdout, stderr)
	if err != nil {
		return exitCode(err, stderr)
	}
	return status
}

const cpUsage = `Usage: sonix-run cp SRC NAME:DST
       sonix-run cp NAME:SRC DST

Copy a file or directory into or out of the running VM NAME, as docker cp
does (see docs/copy.md): when DST is an existing directory, SRC is copied
into it under its own name; otherwise DST is the copy's new name (a DST
ending in / must be a directory, or becomes one). SRC/. copies the
contents of the directory SRC. Modes and times are kept, links copied as
links. Options come before SRC.

A copy out of the VM writes only the name asked for, never through a link,
with modes less your umask and no setuid bits; a new file or directory
appears only once the whole copy has arrived. It is bounded: at most
--max-bytes of file data in --max-entries entries, --max-depth levels
deep; the VM must answer within --start-timeout and never be silent for
--idle-timeout. A copy past a bound fails, naming it.

Examples:
  sonix-run cp ./tests dev:/root/
  sonix-run cp dev:/var/log/messages .
  sonix-run cp dev:/build/out/. ./out              the contents of out
  sonix-run cp --max-bytes 20G dev:/build/images .

Options:
`

func cmdCp(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("cp", cpUsage)
	lim := agent.CopyLimits{
		MaxBytes:     agent.DefaultCopyMaxBytes,
		MaxEntries:   agent.DefaultCopyMaxEntries,
		MaxDepth:     agent.DefaultCopyMaxDepth,
		StartTimeout: agent.DefaultCopyStartTimeout,
		IdleTimeout:  agent.DefaultCopyIdleTimeout,
	}
	depth := int64(lim.MaxDepth)
	fs.Var(cpSizeFlag{&lim.MaxBytes}, "max-bytes", "copying out of the VM, at most `SIZE` of file data (e.g. 500M, 20G; a number alone is MiB)")
	fs.Var(cpCountFlag{&lim.MaxEntries, "max-entries"}, "max-entries", "copying out of the VM, at most `N` files, directories and links")
	fs.Var(cpCountFlag{&depth, "max-depth"}, "max-depth", "copying out of the VM, at most `N` levels of directories")
	fs.Var(cpDurationFlag{&lim.StartTimeout, "start-timeout"}, "start-timeout", "fail if the VM has not answered within `DURATION`")
	fs.Var(cpDurationFlag{&lim.IdleTimeout, "idle-timeout"}, "idle-timeout", "fail once the copy has made no progress for `DURATION`")
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if depth > math.MaxInt32 {
		return usageError(stderr, " cp", "--max-depth %d: expected at most %d", depth, math.MaxInt32)
	}
	lim.MaxDepth = int(depth)
	if fs.NArg() != 2 {
		return usageError(stderr, " cp", "expected SRC and DST, one of them NAME:PATH")
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	srcName, srcPath, srcRemote := splitRemote(src)
	dstName, dstPath, dstRemote := splitRemote(dst)
	if srcRemote == dstRemote {
		return usageError(stderr, " cp", "exactly one of SRC and DST must be NAME:PATH (got %q and %q)", src, dst)
	}
	ctx, stop := verbContext()
	defer stop()
	name := dstName
	if srcRemote {
		name = srcName
	}
	r, err := control.Connect(name)
	if err != nil {
		return exitCode(err, stderr)
	}
	if srcRemote {
		err = r.Agent().CopyFrom(ctx, srcPath, dst, lim)
	} else {
		err = r.Agent().CopyTo(ctx, src, dstPath, lim)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sonix-run cp: %s\n", termsafe.Text(err.Error()))
		if agent.SessionEndOf(err) != "" && !errors.Is(err, agent.ErrProtocol) {
			return exitNoAgent // no live agent to copy with, as exec's 125
		}
		return exitFailure
	}
	return exitOK
}

// cpSizeFlag is a bound in bytes, read as --memory is (vmm.ParseSize).
type cpSizeFlag struct{ n *int64 }

func (f cpSizeFlag) String() string {
	for _, u := range []struct {
		size int64
		unit string
	}{{1 << 40, "T"}, {1 << 30, "G"}, {1 << 20, "M"}, {1 << 10, "K"}} {
		if *f.n >= u.size && *f.n%u.size == 0 {
			return fmt.Sprintf("%d%s", *f.n/u.size, u.unit)
		}
	}
	return fmt.Sprintf("%dK", (*f.n+1023)>>10)
}
func (f cpSizeFlag) Type() string { return "SIZE" }
func (f cpSizeFlag) Set(s string) (err error) {
	*f.n, err = vmm.ParseSize("--max-bytes", s)
	return err
}

// cpCountFlag is a positive count.
type cpCountFlag struct {
	n    *int64
	name string
}

func (f cpCountFlag) String() string { return strconv.FormatInt(*f.n, 10) }
func (f cpCountFlag) Type() string   { return "N" }
func (f cpCountFlag) Set(s string) error {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v < 1 {
		return fmt.Errorf("--%s %q: expected a positive number", f.name, s)
	}
	*f.n = v
	return nil
}

// cpDurationFlag is a positive duration.
type cpDurationFlag struct {
	d    *time.Duration
	name string
}

func (f cpDurationFlag) String() string {
	s := f.d.String() // 1m0s reads as 1m
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return strings.TrimSuffix(s, "h0m")
}
func (f cpDurationFlag) Type() string { return "DURATION" }
func (f cpDurationFlag) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || v <= 0 {
		return fmt.Errorf("--%s %q: expected a positive duration such as 30s or 2m", f.name, s)
	}
	*f.d = v
	return nil
}

// splitRemote reads NAME:PATH; a local path with a colon is written ./a:b.
func splitRemote(s string) (name, path string, remote bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || strings.ContainsRune(s[:i], '/') {
		return "", s, false
	}
	if rundir.CheckName(s[:i]) != nil {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

const listUsage = `Usage: sonix-run list

Your running VMs: name, pid of their sonix-run, uptime, and what they boot.

Options:
`

func cmdList(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("list", listUsage)
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 0 {
		return usageError(stderr, " list", "expected no arguments")
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tPID\tUPTIME\tTARGET")
	vms, notice := rundir.Reap()
	if notice != "" {
		fmt.Fprintln(stderr, termsafe.Text(notice))
	}
	for _, o := range vms {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", termsafe.Line(o.Name), o.PID, time.Since(o.Started).Round(time.Second), termsafe.Line(o.Target))
	}
	w.Flush()
	return exitOK
}

const stopUsage = `Usage: sonix-run stop NAME

Press the power button of the running VM NAME; its sonix-run stops it if it
has not powered off within its --stop-timeout. Returns once the VM has ended.

Options:
`

func cmdStop(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("stop", stopUsage)
	wait := fs.Duration("wait", 2*time.Minute, "give up waiting for the end after `DURATION`")
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, " stop", "expected one NAME")
	}
	r, err := control.Connect(fs.Arg(0))
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		fmt.Fprintf(stderr, "sonix-run stop: %s\n", termsafe.Text(err.Error()))
		return exitFailure
	}
	return exitOK
}

const forwardUsage = `Usage: sonix-run forward NAME tcp:HOSTPORT:GUESTPORT

Forward a port on the host's 127.0.0.1 to the running VM NAME's port, from
now until the VM ends (like --forward at boot; needs --net user or restricted). udp: too.

Options:
`

func cmdForward(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := newVerb("forward", forwardUsage)
	if code, done := fs.parse(args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 2 {
		return usageError(stderr, " forward", "expected NAME and tcp:HOSTPORT:GUESTPORT")
	}
	f, err := vmm.ParseForward(fs.Arg(1))
	if err != nil {
		return usageError(stderr, " forward", "%v", err)
	}
	// As --forward at boot: a taken port is said at once, in these words.
	if err := config.PortFree(f.Proto, f.HostPort); err != nil {
		return usageError(stderr, " forward", "%s: %v", fs.Arg(1), err)
	}
	r, err := control.Connect(fs.Arg(0))
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Forward(ctx, f); err != nil {
		fmt.Fprintf(stderr, "sonix-run forward: %s\n", termsafe.Text(err.Error()))
		return exitFailure
	}
	return exitOK
}
