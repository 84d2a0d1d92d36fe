//go:build !linux

package sockwait

import (
	"context"
	"errors"
)

func listening(ctx context.Context, path string, exited <-chan struct{}) error {
	return errors.New("waiting for a socket is implemented on Linux only")
}
