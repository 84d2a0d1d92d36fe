package launcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/shell"
	"github.com/sonix-run/sonix-run/nixbuild"
	"github.com/sonix-run/sonix-run/vmm"
)

// dryRunDir stands for the run directory in the commands a dry run prints:
// the script creates a fresh one ("$run") when it runs, so two pasted
// scripts never collide and a killed one does not break the next.
const dryRunDir = "/@SONIX_RUN_DIR@"

// dryRun prints, as a shell script a user can paste, the commands a run
// would execute (the backend's processes, in order), and starts nothing.
func dryRun(ctx context.Context, p *config.Plan, msgs *messages) error {
	cfg, vm, backend := &p.Config, p.VM, p.Backend
	if len(vm.Network.VLANs) > 0 {
		return &Error{Reason: BadInput, Err: fmt.Errorf("--dry-run cannot print a --vlan run: the LAN's switch is started and joined by sonix-run itself")}
	}
	vm.RunDir = dryRunDir
	if vm.Name == "" {
		vm.Name = "sonix-run"
	}
	if err := backend.Resolve(ctx, vm, vmm.DryRun, msgs); err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	if !backend.Features().CommandLine {
		msgs.always("sonix-run: the %s backend runs the VM inside sonix-run; there is no command line to print", backend.Name())
		return nil
	}
	procs, err := backend.Commands(vm)
	if err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	w := cfg.Stdout
	fmt.Fprintf(w, "#!/bin/sh\n# sonix-run --dry-run: what a run executes; paste it into a shell to boot the same system.\nset -e\n")
	switch vm.BootKernel {
	case vmm.ExtractedKernel:
		fmt.Fprintf(w, "# The bzImage's vmlinux, decompressed once into the kernel cache, boots through its PVH entry (--kernel-format bzimage: the bzImage).\n")
		fmt.Fprintf(w, "kernel=$(%s extract-kernel %s)\n", shell.Quote(sonixRunCommand()), shell.Quote(vm.Kernel))
	case vmm.CachedKernel:
		fmt.Fprintf(w, "# The bzImage's vmlinux, if the kernel cache holds it, boots through its PVH entry; else the bzImage (--kernel-format bzimage: always).\n")
		fmt.Fprintf(w, "kernel=$(%s extract-kernel --cached-only %s)\n", shell.Quote(sonixRunCommand()), shell.Quote(vm.Kernel))
	}
	fmt.Fprintf(w, "run=$(mktemp -d \"${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/sonix-run-XXXXXX\")\n")
	// The legacy virtiofsd names its lock file after the socket's path with
	// "/" turned into ".".
	fmt.Fprintf(w, "rundots=$(printf %%s \"$run\" | tr / .)\n")
	var leftovers, sockets []string
	for _, pr := range procs {
		if pr.Note != "" {
			fmt.Fprintf(w, "%s\n", shell.Comment(pr.Note))
		}
		leftovers = append(leftovers, pr.Leftovers...)
		switch {
		case pr.Creates != "":
			fmt.Fprintf(w, "[ -e %s ] || %s\n", shellWordRunDir(pr.Creates), shellJoinRunDir(pr.Argv))
			continue
		case pr.Socket != "":
			fmt.Fprintf(w, "%s &\n", shellJoinRunDir(pr.Argv))
			sockets = append(sockets, pr.Socket)
			continue
		}
		if len(sockets) > 0 {
			// sonix-run itself waits with inotify; a script polls the
			// kernel's table of listening Unix sockets (a socket file exists
			// before its daemon listens, so [ -S ] is not enough).
			fmt.Fprintf(w, "listening() { awk -v p=\"$1\" '$4 == \"00010000\" && substr($0, length($0) - length(p) + 1) == p { f = 1 } END { exit !f }' /proc/net/unix; }\n")
			for _, sock := range sockets {
				fmt.Fprintf(w, "until listening %s; do sleep 0.05; done\n", shellWordRunDir(sock))
			}
			sockets = nil
		}
		fmt.Fprintf(w, "status=0\n%s || status=$?\n", shellJoinRunDir(pr.Argv))
	}
	if vm.GDBPort != 0 {
		msgs.always("%s", gdbNotice(vm))
	}
	fmt.Fprintf(w, "rm -rf %s\nexit $status\n", strings.Join(append([]string{"\"$run\""}, quoteAll(leftovers)...), " "))
	return nil
}

// printNixBuild is --dry-run for a Nix installable: what the system is
// depends on the build, so the script builds it and dry-runs again.
func printNixBuild(cfg *config.Config) error {
	// Go-quoted in the comment: a newline in the target must not end the
	// comment and become a command of the pasted script.
	fmt.Fprintf(cfg.Stdout, "#!/bin/sh\n# sonix-run --dry-run: %q is built first; what boots depends on the build:\nset -e\n", cfg.Target)
	fmt.Fprintf(cfg.Stdout, "%s\n", shell.Join(nixbuild.Command(cfg.Target)))
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
			parts[i] = shell.Quote(p)
		}
	}
	return strings.Join(parts, "\"$run\"")
}
