// Package launcher is the run lifecycle: it takes a checked Config (package
// config turns it into a Plan), builds a Nix installable first, makes the
// run directory (package rundir), has the backend start the VM, and
// supervises it until it ends: signals, --timeout, Ctrl-a x, `sonix-run
// stop` and helper failures, each ending mapped to one reason (Error). It
// owns every resource of a run on one cleanup stack, undone last first and
// each step bounded, whatever ends the run; the console; the one writer
// for sonix-run's own messages; the server of the run's control socket
// (package control); and --run, a command through the guest agent.
package launcher
