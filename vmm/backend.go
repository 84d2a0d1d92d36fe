package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Backend runs a VM on one hypervisor.
type Backend interface {
	// Name is what --backend calls it.
	Name() string
	// Features says what the backend can do; the launcher refuses a VM that
	// asks for more before anything starts.
	Features() Features
	// Resolve settles what depends on the host, such as --accel auto, and
	// checks what only the backend can. In DryRun mode it must start
	// nothing.
	Resolve(ctx context.Context, vm *VM, mode Mode, log Log) error
	// Commands returns the processes that run vm, in the order they start,
	// the VM's own last (Features.CommandLine): what --dry-run prints.
	Commands(vm *VM) ([]Process, error)
	// Start boots vm, with what it needs (QEMU's virtiofsd daemons). The
	// guest reads its console from console.In and writes it to console.Out.
	// A refusal found only now (nothing started) wraps ErrRefused.
	Start(ctx context.Context, vm *VM, console Console, log Log) (Machine, error)
}

// ErrRefused: the backend cannot run the VM as described here (a daemon
// that needs root, a host without a needed feature); nothing was started.
var ErrRefused = errors.New("refused")

// Process is a program a backend runs for a VM, as a dry run prints it.
type Process struct {
	Argv []string
	// Socket, when set, is a Unix socket the process listens on: what
	// starts next waits for it.
	Socket string
	// Leftovers are files the process may leave outside the run directory
	// when killed.
	Leftovers []string
	// Note is a line about it for the printed script ("" for none).
	Note string
	// Creates, when set, is the file the process makes: it runs only when
	// that does not exist yet.
	Creates string
}

// Log takes a backend's messages to the user, one line each (no newline):
// Notice for what everyone should see, Detail for what --verbose shows.
// Output is where a helper process's own output goes, its lines prefixed
// with prefix: nil when they are not shown (without --verbose).
type Log interface {
	Notice(format string, args ...any)
	Detail(format string, args ...any)
	Output(prefix string) io.Writer
}

// Mode is what Resolve is for.
type Mode int

const (
	Boot   Mode = iota // a real run follows
	DryRun             // only the command will be printed: start nothing
)

// Features is what a backend can do, as data.
type Features struct {
	CommandLine   bool // the VM is a process with a command line (--dry-run prints it)
	GDB           bool // --gdb
	Forwards      bool // --forward and runtime forwards
	Disks         bool // --disk
	Agent         bool // the guest agent's port
	RawQEMUArgs   bool // --qemu-arg
	Rosetta       bool // --rosetta
	NetNone       bool // --net none
	NetRestricted bool // --net restricted
	VLAN          bool // --vlan
	Dump          bool // --dump
}

// Console is the guest's console as a backend sees it.
type Console struct {
	In  *os.File // the guest reads this
	Out *os.File // the guest writes this
}

// Machine is a running VM.
type Machine interface {
	// Done is closed when the VM has ended; Outcome then says how.
	Done() <-chan struct{}
	Outcome() Outcome
	// Shutdown presses the guest's power button; the guest decides what to do.
	Shutdown(ctx context.Context) error
	// Stop ends the VM at once and returns once it has ended, or with an
	// error once ctx ends first (the VM may then still run).
	Stop(ctx context.Context) error
	// AgentConn connects to the guest agent's port (VM.Agent): one
	// connection for the VM's life; the guest sees data once it opens the port.
	AgentConn(ctx context.Context) (io.ReadWriteCloser, error)
	// AddForward forwards a host port to the guest while it runs
	// (Features.Forwards, with the user network).
	AddForward(ctx context.Context, f Forward) error
	// AgentPort reports the guest's side of the agent's port opening and
	// closing (the agent stopped), latest state only, closed when the VM
	// has ended; nil when the backend cannot see it (the agent link then
	// notices through its keepalive).
	AgentPort() <-chan PortState
}

// PortState is the guest's side of a port: open or not, since when (the
// backend's own time of the event where it has one: events and the
// port's bytes travel apart, and the time orders them).
type PortState struct {
	Open bool
	At   time.Time
}

// Ending is how a VM ended.
type Ending int

const (
	PoweredOff Ending = iota + 1 // the guest powered off
	Reset                        // the guest rebooted (or panicked without reporting it)
	Panicked                     // the guest kernel panicked
	Stopped                      // the host stopped it (Machine.Stop)
	Failed                       // the hypervisor failed
)

func (e Ending) String() string {
	return [...]string{"unknown", "powered off", "reset", "panicked", "stopped", "failed"}[max(0, min(int(e), 5))]
}

// Outcome is how a VM ended and, for Failed, why.
type Outcome struct {
	Ending Ending
	Err    error
	// DumpErr, for Panicked with VM.DumpPath, says why no dump was written.
	DumpErr error
}

// AgentPortName is the name of the virtio console port that carries the
// guest agent's protocol (docs/protocol.md); the guest finds it by this name.
const AgentPortName = "org.sonix-run.agent"

// LogTo is a Log that writes every line, notices and details, to w.
func LogTo(w io.Writer) Log { return writerLog{w} }

type writerLog struct{ w io.Writer }

func (l writerLog) Notice(format string, args ...any) { fmt.Fprintf(l.w, format+"\n", args...) }
func (l writerLog) Detail(format string, args ...any) { fmt.Fprintf(l.w, format+"\n", args...) }
func (l writerLog) Output(prefix string) io.Writer    { return l.w }
