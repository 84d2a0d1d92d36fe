// Command sonix-run boots a built NixOS system without a disk image: the
// kernel and initrd from its bootspec (boot.json), the host's store shared
// read-only over virtio-fs, and a tmpfs root. Its verbs reach a running VM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/termsafe"
	"github.com/sonix-run/sonix-run/launcher"
	_ "github.com/sonix-run/sonix-run/qemu" // the QEMU backend
	"github.com/sonix-run/sonix-run/rundir"
	_ "github.com/sonix-run/sonix-run/vz" // the Virtualization.framework backend (macOS)
)

// Exit statuses; README.md documents them.
const (
	exitOK         = 0   // the guest powered off
	exitUsage      = 2   // bad flags or input; nothing was started
	exitFailure    = 120 // QEMU, virtiofsd or sonix-run itself failed
	exitGuestReset = 121 // the guest rebooted
	exitGuestPanic = 122 // the guest kernel panicked
	exitNoReport   = 123 // a command started, but the guest or its agent ended before its status came
	exitTimeout    = 124 // --timeout expired (as timeout(1))
	exitNoAgent    = 125 // a command: no guest agent to run it (a boot failure, an agent that stopped)
	exitSignalBase = 128 // + the signal that stopped the run; Ctrl-a x counts as SIGINT
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// verbs reach running VMs; anything else is a boot. A TARGET that happens
// to be called like a verb is given as ./exec.
var verbs = map[string]func(args []string, stdin *os.File, stdout, stderr io.Writer) int{
	"exec":    cmdExec,
	"shell":   cmdShell,
	"cp":      cmdCp,
	"list":    cmdList,
	"stop":    cmdStop,
	"forward": cmdForward,
	"kconfig": cmdKconfig,

	"extract-kernel": cmdExtractKernel, // the step --dry-run scripts run before QEMU
}

func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if verb, ok := verbs[args[0]]; ok {
			return verb(args[1:], stdin, stdout, stderr)
		}
	}
	cfg, code := bootConfig(args, stdin, stdout, stderr)
	if cfg == nil {
		return code
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, launcher.StopSignals...)
	defer signal.Stop(signals)
	signal.Ignore(syscall.SIGPIPE) // a closed stdout must not kill sonix-run before it cleans up
	cfg.Signals = signals
	return exitCode(launcher.Run(context.Background(), *cfg), stderr)
}

// exitCode reports err on stderr (one line) and maps it to the exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var e *launcher.Error
	if errors.As(err, &e) && e.Reason == launcher.CommandExit {
		return e.Status // the command's own; its stderr has said what it had to
	}
	// A Config from flags: its problems name the flags.
	fmt.Fprintf(stderr, "sonix-run: %s\n", termsafe.Text(config.FlagMessage(err)))
	var tty *errNeedsTerminal
	switch {
	case errors.Is(err, rundir.ErrNotRunning), errors.Is(err, rundir.ErrBadName), errors.As(err, &tty):
		return exitUsage // a name that is not running, or no terminal: nothing was started
	case errors.Is(err, agent.ErrStatusUnknown):
		return exitNoReport // exec: the VM or its agent ended while the command ran
	case !errors.As(err, &e) && agent.SessionEndOf(err) != "" && !errors.Is(err, agent.ErrProtocol):
		return exitNoAgent // exec: no live agent to run the command
	case !errors.As(err, &e):
		return exitFailure
	}
	switch e.Reason {
	case launcher.BadInput:
		return exitUsage
	case launcher.GuestReset:
		return exitGuestReset
	case launcher.GuestPanic:
		return exitGuestPanic
	case launcher.Timeout:
		return exitTimeout
	case launcher.NoReport:
		return exitNoReport
	case launcher.BootFailure:
		return exitNoAgent
	case launcher.Interrupted:
		if sig, ok := e.Signal.(syscall.Signal); ok {
			return exitSignalBase + int(sig)
		}
		return exitSignalBase + int(syscall.SIGINT)
	}
	return exitFailure
}

// usageError prints a usage problem and returns exit 2.
func usageError(stderr io.Writer, verb, format string, args ...any) int {
	fmt.Fprintf(stderr, "sonix-run%s: %s\nTry 'sonix-run%s --help'.\n", verb, termsafe.Text(fmt.Sprintf(format, args...)), verb)
	return exitUsage
}
