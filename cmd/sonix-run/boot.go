package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/sonix-run/sonix-run/launcher"
	"github.com/sonix-run/sonix-run/vmm"
)

const usage = `Usage: sonix-run [OPTIONS] TARGET [-- COMMAND [ARG...]]
       sonix-run exec|shell|cp|forward|list|stop ...   (a running VM; see below)
       sonix-run kconfig|extract-kernel ...            (kernel developers)

Boot a built NixOS system without a disk image. TARGET is a bootspec
boot.json, a NixOS toplevel directory holding one, a link to either such
as ./result, or a Nix installable (.#vm, a flake reference, a .nix file)
that is built first. The host's store is shared read-only over virtio-fs,
the root is a tmpfs, and the guest console is on stdout.

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
  sonix-run --cwd --user nobody ./result -- make check
                                             this directory in the guest, as a user
  sonix-run --state vm.img ./result          /var and /home kept in vm.img
  sonix-run --dump vmcore ./result           a panic leaves its memory in vmcore
  sonix-run --name dev ./result &            boot a VM to reach by name, then:
  sonix-run exec dev -- uname -r             run a command in it
  sonix-run shell dev                        a login shell in it
  sonix-run cp ./test.sh dev:/root/          copy files in (and dev:/var/log .)
  sonix-run list                             your running VMs
  sonix-run forward dev tcp:8080:80          forward a host port while it runs
  sonix-run stop dev                         power button, then stop
  sonix-run --vlan lan1=10.0.0.1/24 --name a ./result &   two VMs on one virtual LAN
  sonix-run --vlan lan1=10.0.0.2/24 --name b ./result &

Kernel command line: init=<init> from boot.json, then its kernelParams, then
what the machine needs (console=ttyS0 or ttyAMA0 under QEMU, hvc0 under vz;
panic=-1), then $SONIX_APPEND, then --append.

Console keys (when stdin is a terminal): Ctrl-a x stops the VM and exits,
Ctrl-a h lists the keys, Ctrl-a Ctrl-a sends Ctrl-a.

With --run or -- COMMAND, the command runs as root in the guest (its agent:
docs/harness.md); its stdout and stderr are sonix-run's, the console goes
to --console-log (and stderr with --verbose), and the guest powers off after.
--run 'CMD' is run by sh -c; after -- the words are run as they are.

Exit status: 0 the guest powered off; 2 bad input (nothing started);
120 QEMU, virtiofsd or sonix-run failed; 121 the guest rebooted; 122 the
guest kernel panicked; 124 --timeout expired; 128+N stopped by signal N
(130 also for Ctrl-a x). With a command: the command's own status, or
123 the guest ended without reporting it, 125 the guest ended before its
agent was ready; sonix-run says on stderr when a status is its own.

Options:
`

// bootConfig parses a boot's flags into a Config; nil and the exit status
// when there is nothing to boot (help, a usage error).
func bootConfig(args []string, stdin *os.File, stdout, stderr io.Writer) (*launcher.Config, int) {
	cfg := launcher.Config{Stdin: stdin, Stdout: stdout, Stderr: stderr,
		MemoryMiB: launcher.DefaultMemoryMiB, Accel: vmm.AccelAuto, Net: vmm.NetUser}
	var shell, user, cwd, stateSize string
	var showHelp bool
	fs := pflag.NewFlagSet("sonix-run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&shell, "run", "", "run `COMMAND` (sh -c) in the guest, then power off; exit with its status")
	fs.StringVarP(&user, "user", "u", "", "run the command as `USER` (a name or uid[:gid]) instead of root")
	fs.StringVar(&cwd, "cwd", "", "share the current directory at the same path in the guest and run the command there (`rw` or ro)")
	fs.Lookup("cwd").NoOptDefVal = "rw"
	fs.Var(memoryFlag{&cfg.MemoryMiB}, "memory", "guest memory, e.g. 512M or 2G")
	fs.IntVar(&cfg.CPUs, "cpus", launcher.DefaultCPUs, "virtual CPUs")
	fs.Var(accelFlag{&cfg.Accel}, "accel", "auto, kvm or tcg; auto uses KVM where it really runs a guest")
	fs.StringVar(&cfg.Backend, "backend", "auto", "auto, qemu or vz; auto is vz on macOS, qemu elsewhere")
	fs.BoolVar(&cfg.Rosetta, "rosetta", false, "share Rosetta for Linux under the tag rosetta (vz on Apple silicon)")
	fs.StringVar(&cfg.Name, "name", "", "name the VM for exec, shell, cp and stop (default: the system's name)")
	fs.StringVar(&cfg.StoreDir, "store", launcher.DefaultStoreDir, "host `DIR` holding the store paths boot.json names")
	fs.StringVar(&cfg.ModulesDir, "modules", "", "share a /lib/modules `DIR`, or an INSTALL_MOD_PATH root holding lib/modules")
	fs.StringVar(&cfg.StoreTag, "store-tag", launcher.DefaultStoreTag, "virtiofs `TAG` of the store share")
	fs.StringVar(&cfg.ModulesTag, "modules-tag", launcher.DefaultModulesTag, "virtiofs `TAG` of the modules share")
	fs.StringVar(&cfg.Kernel, "kernel", "", "boot this kernel `IMAGE` (bzImage, Image) instead of boot.json's")
	fs.StringVar(&cfg.Initrd, "initrd", "", "use this `INITRD` instead of boot.json's")
	fs.BoolVar(&cfg.Force, "force", false, "boot a --kernel even when its configuration says it cannot boot this system")
	fs.Var(kernelFormatFlag{&cfg.KernelAsIs}, "kernel-format", "auto boots an x86_64 bzImage's vmlinux (kept in the kernel cache) through its PVH entry, about twice as fast under TCG; bzimage boots the kernel file as given")
	fs.StringArrayVar(&cfg.Append, "append", nil, "add `ARG` to the kernel command line, last (repeatable; also $SONIX_APPEND)")
	fs.Var(netFlag{&cfg.Net}, "net", "guest network: user (NAT, no privileges), restricted (NAT without any way out: only forwarded ports reach the guest) or none")
	fs.Var(listFlag[vmm.Forward]{&cfg.Forwards, vmm.ParseForward, "tcp:HOSTPORT:GUESTPORT"}, "forward", "forward host 127.0.0.1:HOSTPORT to the guest (repeatable; also udp:)")
	fs.Var(listFlag[vmm.Disk]{&cfg.Disks, vmm.ParseDisk, "FILE[,format=raw|qcow2][,ro]"}, "disk", "attach an image as a virtio disk (repeatable)")
	fs.StringArrayVar(&cfg.VLANs, "vlan", nil, "a NIC on the virtual LAN `NAME[=ADDR/PREFIX]`, shared with your other VMs on it, with that address (repeatable)")
	fs.Var(listFlag[vmm.Share]{&cfg.Shares, vmm.ParseShare, "HOSTDIR:TAG[:ro]"}, "share", "share a host directory over virtio-fs (repeatable; :ro is enforced on the host)")
	fs.StringArrayVar(&cfg.QEMUArgs, "qemu-arg", nil, "add `ARG` to QEMU's command line, last (repeatable)")
	fs.IntVar(&cfg.GDBPort, "gdb", 0, "open QEMU's gdb stub on localhost `PORT` (default 1234) and boot with nokaslr")
	fs.Lookup("gdb").NoOptDefVal = "1234"
	fs.BoolVar(&cfg.GDBWait, "gdb-wait", false, "with --gdb: stop the CPUs until gdb attaches and continues")
	fs.StringVar(&cfg.Specialisation, "specialisation", "", "boot the specialisation `NAME`")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "stop the VM after `DURATION` (e.g. 90s, 5m) and exit 124")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", launcher.DefaultStopTimeout, "on SIGINT/SIGTERM, how long the guest may take to power off")
	fs.StringVar(&cfg.ConsoleLog, "console-log", "", "also append the console to `FILE`")
	fs.StringVar(&cfg.State, "state", "", "keep the guest's state (/var, /home) on the disk image `FILE`, created on first use")
	fs.StringVar(&stateSize, "state-size", "8G", "the size of a --state image created on first use")
	fs.StringVar(&cfg.DumpPath, "dump", "", "when the guest panics, write its memory (an ELF vmcore) to `FILE`")
	fs.BoolVarP(&cfg.Verbose, "verbose", "v", false, "show QEMU's and virtiofsd's own messages, and the VM's name")
	fs.BoolVarP(&cfg.DryRun, "dry-run", "n", false, "print the commands a run executes, as a shell script, and start nothing")
	fs.BoolVarP(&showHelp, "help", "h", false, "show this help")
	if err := fs.Parse(args); err != nil {
		return nil, usageError(stderr, "", "%v", err)
	}
	if showHelp {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
		return nil, exitOK
	}
	args = fs.Args()
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		// TARGET -- COMMAND ARGS...: the words are run as they are, no shell.
		if shell != "" {
			return nil, usageError(stderr, "", "give the command with --run or after --, not both")
		}
		if len(args) == dash {
			return nil, usageError(stderr, "", "no command after --")
		}
		cfg.Command = &launcher.Command{Argv: args[dash:]}
		args = args[:dash]
	} else if fs.Changed("run") {
		cfg.Command = &launcher.Command{Shell: shell}
	}
	if len(args) != 1 {
		return nil, usageError(stderr, "", "expected one TARGET (a boot.json or NixOS toplevel), got %d", len(args))
	}
	cfg.Target = args[0]
	if user != "" {
		if cfg.Command == nil {
			return nil, usageError(stderr, "", "--user is for the command (--run or -- COMMAND)")
		}
		cfg.Command.User = user
	}
	switch cwd {
	case "":
	case "rw", "ro":
		dir, err := os.Getwd()
		if err != nil {
			return nil, usageError(stderr, "", "--cwd: %v", err)
		}
		cfg.Workdir, cfg.WorkdirReadOnly = dir, cwd == "ro"
	default:
		return nil, usageError(stderr, "", "--cwd=%s: expected --cwd, --cwd=rw or --cwd=ro", cwd)
	}
	if fs.Changed("state-size") {
		n, err := vmm.ParseSize("--state-size", stateSize)
		if err != nil {
			return nil, usageError(stderr, "", "%v", err)
		}
		cfg.StateSize = n
	}
	if fs.Changed("cpus") && cfg.CPUs < 1 {
		return nil, usageError(stderr, "", "--cpus %d: expected 1 to %d", cfg.CPUs, vmm.MaxCPUs)
	}
	// $SONIX_APPEND comes before --append, so the flags still win.
	cfg.Append = append(strings.Fields(os.Getenv("SONIX_APPEND")), cfg.Append...)
	return &cfg, exitOK
}
