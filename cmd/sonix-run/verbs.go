package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/sonix-run/sonix-run/launcher"
	"github.com/sonix-run/sonix-run/vmm"
)

// verbFlags is the flag set of a verb, with --help; flags come before NAME.
func verbFlags(verb, usage string, stdout, stderr io.Writer) (*pflag.FlagSet, *bool) {
	fs := pflag.NewFlagSet("sonix-run "+verb, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	help := fs.BoolP("help", "h", false, "show this help")
	fs.Usage = func() {} // errors say "Try ... --help" instead of dumping it
	fs.SetInterspersed(false)
	return fs, help
}

func printVerbHelp(fs *pflag.FlagSet, usage string, stdout io.Writer) int {
	fmt.Fprint(stdout, usage)
	fs.SetOutput(stdout)
	fs.PrintDefaults()
	return exitOK
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
	fs, help := verbFlags("exec", execUsage, stdout, stderr)
	tty := fs.BoolP("tty", "t", false, "run the command on a pseudo-terminal (stdin must be a terminal)")
	user := fs.StringP("user", "u", "", "run as `USER` (a name or a numeric uid[:gid]) instead of root")
	dir := fs.StringP("workdir", "w", "", "run in `DIR` (default /)")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, " exec", "%v", err)
	}
	if *help {
		return printVerbHelp(fs, execUsage, stdout)
	}
	rest := fs.Args()
	if len(rest) > 1 && rest[1] == "--" {
		rest = append(rest[:1:1], rest[2:]...)
	}
	if len(rest) < 2 {
		return usageError(stderr, " exec", "expected NAME and a COMMAND")
	}
	cmd := launcher.Command{Argv: rest[1:], User: *user, Dir: *dir, TTY: *tty}
	return remoteExec(rest[0], cmd, stdin, stdout, stderr)
}

const shellUsage = `Usage: sonix-run shell [OPTIONS] NAME

A login shell in the running VM NAME, on a pseudo-terminal (bash where the
guest has it, else sh). Exit the shell to return.

Options:
`

func cmdShell(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs, help := verbFlags("shell", shellUsage, stdout, stderr)
	user := fs.StringP("user", "u", "", "log in as `USER` instead of root")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, " shell", "%v", err)
	}
	if *help {
		return printVerbHelp(fs, shellUsage, stdout)
	}
	if fs.NArg() != 1 {
		return usageError(stderr, " shell", "expected one NAME")
	}
	cmd := launcher.Command{Shell: `if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi`, User: *user, TTY: true}
	return remoteExec(fs.Arg(0), cmd, stdin, stdout, stderr)
}

func remoteExec(name string, cmd launcher.Command, stdin *os.File, stdout, stderr io.Writer) int {
	r, err := launcher.Connect(name)
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, stop := verbContext()
	defer stop()
	status, err := r.Exec(ctx, cmd, stdin, stdout, stderr)
	if err != nil {
		return exitCode(err, stderr)
	}
	return status
}

const cpUsage = `Usage: sonix-run cp SRC NAME:DST
       sonix-run cp NAME:SRC DST

Copy a file or directory into or out of the running VM NAME, keeping modes.
When DST is an existing directory, SRC is copied into it; else SRC is
copied to DST.

Examples:
  sonix-run cp ./tests dev:/root/
  sonix-run cp dev:/var/log/messages .

Options:
`

func cmdCp(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs, help := verbFlags("cp", cpUsage, stdout, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, " cp", "%v", err)
	}
	if *help {
		return printVerbHelp(fs, cpUsage, stdout)
	}
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
	r, err := launcher.Connect(name)
	if err != nil {
		return exitCode(err, stderr)
	}
	if srcRemote {
		err = r.Agent().CopyFrom(ctx, srcPath, dst)
	} else {
		err = r.Agent().CopyTo(ctx, src, dstPath)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sonix-run cp: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// splitRemote reads NAME:PATH; a local path with a colon is written ./a:b.
func splitRemote(s string) (name, path string, remote bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || strings.ContainsRune(s[:i], '/') {
		return "", s, false
	}
	if launcher.CheckName(s[:i]) != nil {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

const listUsage = `Usage: sonix-run list

Your running VMs: name, pid of their sonix-run, uptime, and what they boot.

Options:
`

func cmdList(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs, help := verbFlags("list", listUsage, stdout, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, " list", "%v", err)
	}
	if *help {
		return printVerbHelp(fs, listUsage, stdout)
	}
	if fs.NArg() != 0 {
		return usageError(stderr, " list", "expected no arguments")
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tPID\tUPTIME\tTARGET")
	for _, o := range launcher.List() {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", o.Name, o.PID, time.Since(o.Started).Round(time.Second), o.Target)
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
	fs, help := verbFlags("stop", stopUsage, stdout, stderr)
	wait := fs.Duration("wait", 2*time.Minute, "give up waiting for the end after `DURATION`")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, " stop", "%v", err)
	}
	if *help {
		return printVerbHelp(fs, stopUsage, stdout)
	}
	if fs.NArg() != 1 {
		return usageError(stderr, " stop", "expected one NAME")
	}
	r, err := launcher.Connect(fs.Arg(0))
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		fmt.Fprintf(stderr, "sonix-run stop: %v\n", err)
		return exitFailure
	}
	return exitOK
}

const forwardUsage = `Usage: sonix-run forward NAME tcp:HOSTPORT:GUESTPORT

Forward a port on the host's 127.0.0.1 to the running VM NAME's port, from
now until the VM ends (like --forward at boot; needs --net user). udp: too.

Options:
`

func cmdForward(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs, help := verbFlags("forward", forwardUsage, stdout, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, " forward", "%v", err)
	}
	if *help {
		return printVerbHelp(fs, forwardUsage, stdout)
	}
	if fs.NArg() != 2 {
		return usageError(stderr, " forward", "expected NAME and tcp:HOSTPORT:GUESTPORT")
	}
	f, err := vmm.ParseForward(fs.Arg(1))
	if err != nil {
		return usageError(stderr, " forward", "%v", err)
	}
	r, err := launcher.Connect(fs.Arg(0))
	if err != nil {
		return exitCode(err, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Forward(ctx, f); err != nil {
		fmt.Fprintf(stderr, "sonix-run forward: %v\n", err)
		return exitFailure
	}
	return exitOK
}
