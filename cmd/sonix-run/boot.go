package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/sonix-run/sonix-run/config"
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
docs/protocol.md); its stdout and stderr are sonix-run's, the console goes
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

// tableFlag registers a flag of launcher's table with pflag: each value is
// parsed and checked by the table at once (a bad one is exit 2 naming the
// flag, before anything starts).
type tableFlag struct {
	f   *config.Flag
	cfg *config.Config
	err *error // the latest error of Set: pflag's own wording wraps it
}

func (t tableFlag) String() string { return t.f.Value(t.cfg) }
func (t tableFlag) Type() string   { return t.f.Kind }
func (t tableFlag) Set(v string) error {
	err := t.f.Set(t.cfg, v)
	*t.err = err
	return err
}

// bootConfig parses a boot's flags into a Config; nil and the exit status
// when there is nothing to boot (help, a usage error).
func bootConfig(args []string, stdin *os.File, stdout, stderr io.Writer) (*config.Config, int) {
	cfg := config.Config{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	var showHelp bool
	var setErr error
	fs := pflag.NewFlagSet("sonix-run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	table := config.Flags()
	for n := range table {
		f := &table[n]
		pf := fs.VarPF(tableFlag{f, &cfg, &setErr}, f.Name, f.Short, f.Usage)
		switch {
		case f.Kind == "bool":
			pf.NoOptDefVal = "true"
		case f.NoValue != "":
			pf.NoOptDefVal = f.NoValue
		}
		pf.DefValue = "" // defaults are in the usage texts
	}
	fs.BoolVarP(&showHelp, "help", "h", false, "show this help")
	if err := fs.Parse(args); err != nil {
		if setErr != nil {
			err = setErr // already names the flag and what was expected
		}
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
		if cfg.Command != nil && cfg.Command.Shell != "" {
			return nil, usageError(stderr, "", "give the command with --run or after --, not both")
		}
		if len(args) == dash {
			return nil, usageError(stderr, "", "no command after --")
		}
		if cfg.Command == nil {
			cfg.Command = &config.Command{}
		}
		cfg.Command.Argv = args[dash:]
		args = args[:dash]
	}
	if len(args) != 1 {
		return nil, usageError(stderr, "", "expected one TARGET (a boot.json or NixOS toplevel), got %d", len(args))
	}
	cfg.Target = args[0]
	if cfg.Command != nil && cfg.Command.Shell == "" && len(cfg.Command.Argv) == 0 {
		return nil, usageError(stderr, "", "--user is for the command (--run or -- COMMAND)")
	}
	// $SONIX_APPEND comes before --append, so the flags still win.
	cfg.Append = append(strings.Fields(os.Getenv("SONIX_APPEND")), cfg.Append...)
	return &cfg, exitOK
}
