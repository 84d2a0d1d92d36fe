//go:build !linux

package guest

import (
	"context"
	"errors"

	"github.com/sonix-run/sonix-run/agent/wire"
)

var errOnlyLinux = errors.New("only Linux guests are supported")

func kernelRelease() string { return "" }

func unameMachine() string { return "" }

func canPowerOff() error { return errOnlyLinux }

func powerOff(func(string, ...any)) error { return errOnlyLinux }

// exec answers that commands need a Linux guest.
func (s *server) exec(_ context.Context, o *op, _ *wire.ExecRequest) {
	o.fail(125, "%v", errOnlyLinux)
}

// execution is a running command; there are none here.
type execution struct{}

func (x *execution) attachInput(o *op) { o.fail(0, "%v", errOnlyLinux) }
