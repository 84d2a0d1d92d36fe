package launcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sonix-run/sonix-run/nixbuild"
	"github.com/sonix-run/sonix-run/virtiofs"
	"github.com/sonix-run/sonix-run/vmm"
)

// dryRunDir stands for the run directory in the commands a dry run prints:
// the script creates a fresh one ("$run") when it runs, so two pasted
// scripts never collide and a killed one does not break the next.
const dryRunDir = "/@SONIX_RUN_DIR@"

// dryRun prints, as a shell script a user can paste, the commands a run
// would execute, and starts nothing.
func dryRun(ctx context.Context, p *plan, msgs *messages) error {
	cfg, vm, backend := &p.cfg, p.vm, p.backend
	if len(vm.Network.VLANs) > 0 {
		return &Error{Reason: BadInput, Err: fmt.Errorf("--dry-run cannot print a --vlan run: the LAN's switch is started and joined by sonix-run itself")}
	}
	vm.RunDir = dryRunDir
	if vm.Name == "" {
		vm.Name = "sonix-run"
	}
	assignSockets(vm)
	if err := backend.Resolve(ctx, vm, vmm.DryRun, msgs); err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	if !backend.Features().CommandLine {
		msgs.always("sonix-run: the %s backend runs the VM inside sonix-run; there is no command line to print", backend.Name())
		return nil
	}
	w := cfg.Stdout
	fmt.Fprintf(w, "#!/bin/sh\n# sonix-run --dry-run: what a run executes; paste it into a shell to boot the same system.\nset -e\n")
	switch vm.BootKernel {
	case vmm.ExtractedKernel:
		fmt.Fprintf(w, "# The bzImage's vmlinux, decompressed once into the kernel cache, boots through its PVH entry (--kernel-format bzimage: the bzImage).\n")
		fmt.Fprintf(w, "kernel=$(%s extract-kernel %s)\n", ShellQuote(sonixRunCommand()), ShellQuote(vm.Kernel))
	case vmm.CachedKernel:
		fmt.Fprintf(w, "# The bzImage's vmlinux, if the kernel cache holds it, boots through its PVH entry; else the bzImage (--kernel-format bzimage: always).\n")
		fmt.Fprintf(w, "kernel=$(%s extract-kernel --cached-only %s)\n", ShellQuote(sonixRunCommand()), ShellQuote(vm.Kernel))
	}
	fmt.Fprintf(w, "run=$(mktemp -d \"${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/sonix-run-XXXXXX\")\n")
	// The legacy virtiofsd names its lock file after the socket's path with
	// "/" turned into ".".
	fmt.Fprintf(w, "rundots=$(printf %%s \"$run\" | tr / .)\n")
	if cfg.State != "" {
		if _, err := os.Stat(cfg.State); err != nil {
			create := []string{"truncate", "-s", fmt.Sprint(cfg.StateSize), cfg.State}
			if stateFormat(cfg.State) == "qcow2" {
				create = []string{"qemu-img", "create", "-q", "-f", "qcow2", cfg.State, fmt.Sprint(cfg.StateSize)}
			}
			fmt.Fprintf(w, "[ -e %s ] || %s\n", ShellQuote(cfg.State), ShellJoin(create))
		}
	}
	var sockets, leftovers []string
	if backend.Features().ExternalVirtiofsd && len(vm.Shares) > 0 {
		d, err := virtiofs.Find(ctx)
		if err != nil {
			return &Error{Reason: BadInput, Err: err}
		}
		for _, s := range daemonShares(vm) {
			args, err := d.Args(s, os.Geteuid() == 0)
			if err != nil {
				return &Error{Reason: BadInput, Err: err}
			}
			if note := virtiofs.GuardNote(s); note != "" {
				fmt.Fprintf(w, "%s\n", note)
			}
			fmt.Fprintf(w, "%s &\n", shellJoinRunDir(args))
			sockets = append(sockets, s.Socket)
			leftovers = append(leftovers, d.Leftovers(s)...)
		}
		// sonix-run itself waits with inotify; a script polls the kernel's
		// table of listening Unix sockets (a socket file exists before its
		// daemon listens, so [ -S ] is not enough).
		fmt.Fprintf(w, "listening() { awk -v p=\"$1\" '$4 == \"00010000\" && substr($0, length($0) - length(p) + 1) == p { f = 1 } END { exit !f }' /proc/net/unix; }\n")
		for _, s := range sockets {
			fmt.Fprintf(w, "until listening %s; do sleep 0.05; done\n", shellWordRunDir(s))
		}
	}
	argv, err := backend.Command(vm)
	if err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	if vm.GDBPort != 0 {
		msgs.always("%s", gdbNotice(vm))
	}
	fmt.Fprintf(w, "status=0\n%s || status=$?\n", shellJoinRunDir(argv))
	fmt.Fprintf(w, "rm -rf %s\nexit $status\n", strings.Join(append([]string{"\"$run\""}, quoteAll(leftovers)...), " "))
	return nil
}

// printNixBuild is --dry-run for a Nix installable: what the system is
// depends on the build, so the script builds it and dry-runs again.
func printNixBuild(cfg *Config) error {
	// Go-quoted in the comment: a newline in the target must not end the
	// comment and become a command of the pasted script.
	fmt.Fprintf(cfg.Stdout, "#!/bin/sh\n# sonix-run --dry-run: %q is built first; what boots depends on the build:\nset -e\n", cfg.Target)
	fmt.Fprintf(cfg.Stdout, "%s\n", ShellJoin(nixbuild.Command(cfg.Target)))
	fmt.Fprintf(cfg.Stdout, "# then: sonix-run --dry-run [the same options] /nix/store/...-nixos-system-... (the path it printed)\n")
	return nil
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == vmm.ExtractedKernel || a == vmm.CachedKernel {
			out[i] = "\"$kernel\""
			continue
		}
		out[i] = shellWordRunDir(a)
	}
	return out
}

// sonixRunCommand is how a printed script runs sonix-run: this very binary
// when it is sonix-run (PATH may differ where the script runs), else by name
// (a program that uses this package as a library is not sonix-run).
func sonixRunCommand() string {
	if exe, err := os.Executable(); err == nil && filepath.Base(exe) == "sonix-run" {
		return exe
	}
	return "sonix-run"
}

// shellJoinRunDir quotes args like ShellJoin, with the run directory as "$run".
func shellJoinRunDir(args []string) string { return strings.Join(quoteAll(args), " ") }

func shellWordRunDir(a string) string {
	if dotted := strings.ReplaceAll(dryRunDir, "/", "."); strings.Contains(a, dotted) {
		parts := strings.Split(a, dotted)
		for i, p := range parts {
			parts[i] = shellWordRunDir(p)
		}
		return strings.Join(parts, "\"$rundots\"")
	}
	parts := strings.Split(a, dryRunDir)
	for i, p := range parts {
		if p != "" {
			parts[i] = ShellQuote(p)
		}
	}
	return strings.Join(parts, "\"$run\"")
}

// ShellJoin quotes each argument for a POSIX shell and joins them.
func ShellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = ShellQuote(a)
	}
	return strings.Join(q, " ")
}

// ShellQuote quotes s for a POSIX shell, leaving plainly safe words bare.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
