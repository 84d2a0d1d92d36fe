//go:build !unix

package vlan

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"time"
)

var errUnsupported = errors.New("vlan: virtual LANs need a Unix host")

// DefaultDir is where LANs would live.
func DefaultDir() string { return filepath.Join(os.TempDir(), "sonix-run-vlan") }

func ensureDir(string) error { return errUnsupported }

type lanLock struct{}

func lockLAN(context.Context, lanPaths) (*lanLock, error) { return nil, errUnsupported }
func (*lanLock) unlock()                                  {}
func (*lanLock) removeAndUnlock()                         {}

func startSwitchProcess(context.Context, lanPaths, time.Duration, *net.UnixListener) error {
	return errUnsupported
}
