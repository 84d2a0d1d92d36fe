package launcher

import (
	"context"
	"fmt"

	"os"
	"path/filepath"
	"strings"

	"github.com/sonix-run/sonix-run/virtiofs"
)

// dryRun prints, as a shell script a user can paste, the commands a run
// would execute, and starts nothing.
func dryRun(ctx context.Context, cfg *Config, vm *VM, backend Backend) error {
	// The run directory a real run would create, named but not created.
	vm.RunDir = filepath.Join(runDirBase(), "sonix-run-dry-run")
	assignSockets(vm)
	if err := backend.Resolve(ctx, vm, true, cfg.Stderr); err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	w := cfg.Stdout
	fmt.Fprintf(w, "# sonix-run --dry-run: what a run executes; paste it into a shell to boot the same system.\n")
	fmt.Fprintf(w, "mkdir -m 0700 %s\n", ShellQuote(vm.RunDir))
	var sockets, leftovers []string
	if backend.UsesVirtiofsd() && len(vm.Shares) > 0 {
		d, err := virtiofs.Find(ctx)
		if err != nil {
			return &Error{Reason: BadInput, Err: err}
		}
		for _, s := range daemonShares(vm) {
			args, err := d.Args(s, os.Geteuid() == 0)
			if err != nil {
				return &Error{Reason: BadInput, Err: err}
			}
			fmt.Fprintf(w, "%s &\n", ShellJoin(args))
			sockets = append(sockets, s.Socket)
			leftovers = append(leftovers, d.Leftovers(s)...)
		}
		// sonix-run itself waits with inotify; a pasted script can only poll.
		var tests []string
		for _, s := range sockets {
			tests = append(tests, "[ -S "+ShellQuote(s)+" ]")
		}
		fmt.Fprintf(w, "until %s; do sleep 0.05; done\n", strings.Join(tests, " && "))
	}
	argv, err := backend.Command(vm)
	if err != nil {
		return &Error{Reason: BadInput, Err: err}
	}
	if argv != nil {
		if vm.GDBPort != 0 {
			fmt.Fprintln(cfg.Stderr, gdbNotice(vm))
		}
		fmt.Fprintf(w, "%s\n", ShellJoin(argv))
	}
	fmt.Fprintf(w, "rm -rf %s\n", ShellJoin(append([]string{vm.RunDir}, leftovers...)))
	return nil
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
