// Command sonix-run boots a built NixOS system without a disk image: the
// kernel and initrd from its bootspec (boot.json), the host's store shared
// read-only over virtio-fs, and a tmpfs root.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/sonix-run/sonix-run/launcher"
	_ "github.com/sonix-run/sonix-run/qemu" // the QEMU backend
	_ "github.com/sonix-run/sonix-run/vz"   // the Virtualization.framework backend (macOS)
)

// Exit statuses; README.md documents them.
const (
	exitOK         = 0   // the guest powered off
	exitUsage      = 2   // bad flags or input; nothing was started
	exitFailure    = 120 // QEMU, virtiofsd or sonix-run itself failed
	exitGuestReset = 121 // the guest rebooted
	exitGuestPanic = 122 // the guest kernel panicked
	exitNoReport   = 123 // --run: the guest ended without reporting the command's status
	exitTimeout    = 124 // --timeout expired (as timeout(1))
	exitNoAgent    = 125 // --run: the guest ended before its agent was ready (boot failure)
	exitSignalBase = 128 // + the signal that stopped the run; Ctrl-a x counts as SIGINT
)

const usage = `Usage: sonix-run [OPTIONS] TARGET [-- COMMAND [ARG...]]

Boot a built NixOS system without a disk image. TARGET is a bootspec
boot.json, a NixOS toplevel directory holding one, or a link to either such
as ./result. The host's store is shared read-only over virtio-fs, the root
is a tmpfs, and the guest console is on stdout.

Examples:
  sonix-run ./result                         boot the system just built
  sonix-run --specialisation debug ./result  boot one of its specialisations
  sonix-run --memory 4G --cpus 4 ./result/boot.json
  sonix-run --store /tmp/chroot/nix/store --modules ./lib/modules ./result
  sonix-run --append systemd.unit=rescue.target ./result
  sonix-run --forward tcp:2222:22 --disk scratch.img ./result
  sonix-run --timeout 5m --console-log boot.log ./result   (CI)
  sonix-run --dry-run ./result               print the commands, start nothing
  sonix-run --run 'uname -a; exit 7' ./result   run a command, exit with its status
  echo hi | sonix-run ./result -- cat        stdin (not a terminal) is the command's
  sonix-run --kernel arch/x86/boot/bzImage --modules ./modroot --gdb ./result
                                             your kernel and modules_install tree

Kernel command line: init=<init> from boot.json, then its kernelParams, then
what the machine needs (console=ttyS0 or ttyAMA0 under QEMU, hvc0 under vz;
panic=-1), then --append.

Console keys (when stdin is a terminal): Ctrl-a x stops the VM and exits,
Ctrl-a h lists the keys, Ctrl-a Ctrl-a sends Ctrl-a.

With --run or -- COMMAND, the command runs as root in the guest (its agent:
docs/harness.md); its stdout and stderr are sonix-run's, the console goes
to --console-log (and stderr with --verbose), and the guest powers off after.

Exit status: 0 the guest powered off; 2 bad input (nothing started);
120 QEMU, virtiofsd or sonix-run failed; 121 the guest rebooted; 122 the
guest kernel panicked; 124 --timeout expired; 128+N stopped by signal N
(130 also for Ctrl-a x). With a command: the command's own status, or
123 the guest ended without reporting it, 125 the guest ended before its
agent was ready; sonix-run says on stderr when a status is its own.

Options:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	cfg := launcher.Config{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	var memory, accel string
	var showHelp bool
	fs := pflag.NewFlagSet("sonix-run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&cfg.Command, "run", "", "run `COMMAND` (sh -c) in the guest, then power off; exit with its status")
	fs.StringVar(&memory, "memory", fmt.Sprintf("%dM", launcher.DefaultMemoryMiB), "guest memory, e.g. 512M or 2G")
	fs.IntVar(&cfg.CPUs, "cpus", launcher.DefaultCPUs, "virtual CPUs")
	fs.StringVar(&accel, "accel", "auto", "auto, kvm or tcg; auto uses KVM where it really runs a guest")
	fs.StringVar(&cfg.Backend, "backend", "auto", "auto, qemu or vz; auto is vz on macOS, qemu elsewhere")
	fs.BoolVar(&cfg.Rosetta, "rosetta", false, "share Rosetta for Linux under the tag rosetta (vz on Apple silicon)")
	fs.StringVar(&cfg.StoreDir, "store", launcher.DefaultStoreDir, "host `DIR` holding the store paths boot.json names")
	fs.StringVar(&cfg.ModulesDir, "modules", "", "share a /lib/modules `DIR`, or an INSTALL_MOD_PATH root holding lib/modules")
	fs.StringVar(&cfg.StoreTag, "store-tag", launcher.DefaultStoreTag, "virtiofs `TAG` of the store share")
	fs.StringVar(&cfg.ModulesTag, "modules-tag", launcher.DefaultModulesTag, "virtiofs `TAG` of the modules share")
	fs.StringVar(&cfg.Kernel, "kernel", "", "boot this kernel `IMAGE` (bzImage, Image) instead of boot.json's")
	fs.StringVar(&cfg.Initrd, "initrd", "", "use this `INITRD` instead of boot.json's")
	fs.StringArrayVar(&cfg.Append, "append", nil, "add `ARG` to the kernel command line, last (repeatable; also $SONIX_APPEND)")
	fs.StringVar(&cfg.Net, "net", launcher.NetUser, "guest network: user (NAT, no privileges) or none")
	fs.StringArrayVar(&cfg.Forwards, "forward", nil, "forward host 127.0.0.1:HOSTPORT to the guest: `tcp:HOSTPORT:GUESTPORT` (repeatable)")
	fs.StringArrayVar(&cfg.Disks, "disk", nil, "attach an image as a virtio disk: `FILE[,format=raw|qcow2][,ro]` (repeatable)")
	fs.StringArrayVar(&cfg.Shares, "share", nil, "share a host directory over virtio-fs: `HOSTDIR:TAG[:ro]` (repeatable)")
	fs.StringArrayVar(&cfg.QEMUArgs, "qemu-arg", nil, "add `ARG` to QEMU's command line, last (repeatable)")
	fs.IntVar(&cfg.GDBPort, "gdb", 0, "open QEMU's gdb stub on localhost `PORT` (default 1234) and boot with nokaslr")
	fs.Lookup("gdb").NoOptDefVal = "1234"
	fs.BoolVar(&cfg.GDBWait, "gdb-wait", false, "with --gdb: stop the CPUs until gdb attaches and continues")
	fs.StringVar(&cfg.Specialisation, "specialisation", "", "boot the specialisation `NAME`")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "stop the VM after `DURATION` (e.g. 90s, 5m) and exit 124")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", launcher.DefaultStopTimeout, "on SIGINT/SIGTERM, how long the guest may take to power off")
	fs.StringVar(&cfg.ConsoleLog, "console-log", "", "also append the console to `FILE`")
	fs.BoolVarP(&cfg.Verbose, "verbose", "v", false, "show QEMU's and virtiofsd's own messages")
	fs.BoolVarP(&cfg.DryRun, "dry-run", "n", false, "print the commands a run executes, as a shell script, and start nothing")
	fs.BoolVarP(&showHelp, "help", "h", false, "show this help")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "sonix-run: %v\nTry 'sonix-run --help'.\n", err)
		return exitUsage
	}
	if showHelp {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
		return exitOK
	}
	args = fs.Args()
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		// TARGET -- COMMAND ARGS...: each word is quoted, so it arrives as typed.
		if cfg.Command != "" {
			fmt.Fprintf(stderr, "sonix-run: give the command with --run or after --, not both\n")
			return exitUsage
		}
		if len(args) == dash {
			fmt.Fprintf(stderr, "sonix-run: no command after --\n")
			return exitUsage
		}
		cfg.Command = launcher.ShellJoin(args[dash:])
		args = args[:dash]
	}
	if len(args) != 1 {
		fmt.Fprintf(stderr, "sonix-run: expected one TARGET (a boot.json or NixOS toplevel), got %d\nTry 'sonix-run --help'.\n", len(args))
		return exitUsage
	}
	cfg.Target = args[0]
	// $SONIX_APPEND comes before --append, so the flags still win.
	cfg.Append = append(strings.Fields(os.Getenv("SONIX_APPEND")), cfg.Append...)
	cfg.Accel = launcher.Accel(accel)
	var err error
	if cfg.MemoryMiB, err = launcher.ParseMemory(memory); err != nil {
		fmt.Fprintf(stderr, "sonix-run: --memory: %v\n", err)
		return exitUsage
	}

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, launcher.StopSignals...)
	defer signal.Stop(signals)
	signal.Ignore(syscall.SIGPIPE) // a closed stdout must not kill sonix-run before it cleans up
	cfg.Signals = signals

	err = launcher.Run(context.Background(), cfg)
	if err == nil {
		return exitOK
	}
	var e *launcher.Error
	if errors.As(err, &e) && e.Reason == launcher.CommandExit {
		return e.Status // the command's own; its stderr has said what it had to
	}
	fmt.Fprintf(stderr, "sonix-run: %v\n", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var e *launcher.Error
	if !errors.As(err, &e) {
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
