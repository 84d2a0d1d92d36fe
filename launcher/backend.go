package launcher

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
)

// Backend runs a VM on one hypervisor.
type Backend interface {
	// Name is what --backend calls it.
	Name() string
	// UsesVirtiofsd reports whether shares are served by virtiofsd processes
	// that the launcher starts (QEMU), rather than by the hypervisor itself (vz).
	UsesVirtiofsd() bool
	// Resolve settles what depends on the host, such as --accel auto. With
	// dryRun it must start nothing. Notices go to log, one line each.
	Resolve(ctx context.Context, vm *VM, dryRun bool, log io.Writer) error
	// Command returns the command line that runs vm, or nil when the backend
	// runs it in-process.
	Command(vm *VM) ([]string, error)
	// Start boots vm. The guest reads its console from console.In and writes
	// it to console.Out.
	Start(ctx context.Context, vm *VM, console Console, log io.Writer) (Machine, error)
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
	// Stop ends the VM at once and waits until it has ended.
	Stop() error
}

// PortDialer is a Machine whose named ports (VM.Ports) the host can open.
type PortDialer interface {
	DialPort(ctx context.Context, name string) (io.ReadWriteCloser, error)
	// PortMark and WaitPortOpen tell when the guest opens a port: data the
	// host sends, then hangs up on, before that would be lost.
	PortMark() int
	WaitPortOpen(ctx context.Context, name string, mark int) error
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
}

var (
	backendsMu sync.Mutex
	backends   = map[string]Backend{}
)

// RegisterBackend makes a backend available under its name; backends call it
// from init, and the command imports them.
func RegisterBackend(b Backend) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	backends[b.Name()] = b
}

// DefaultBackend is the one "auto" picks on this OS.
func DefaultBackend() string { return defaultBackendName }

func lookupBackend(name string) (Backend, error) {
	if name == "" || name == "auto" {
		name = DefaultBackend()
	}
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if b, ok := backends[name]; ok {
		return b, nil
	}
	var names []string
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("--backend %s is not available in this build (available: auto, %s)", name, strings.Join(names, ", "))
}
