package vmm

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

var (
	backendsMu sync.Mutex
	backends   = map[string]Backend{}
)

// Register makes a backend available under its name; backends call it from
// init (vz on macOS only), and the programs that offer them import them
// (cmd/sonix-run and harness import qemu and vz).
func Register(b Backend) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	backends[b.Name()] = b
}

// DefaultBackend is the one "auto" picks on this OS.
func DefaultBackend() string { return defaultBackendName }

// Lookup returns the backend --backend names ("" or "auto": DefaultBackend).
func Lookup(name string) (Backend, error) {
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
