// Package sockwait waits for a helper process to listen on a Unix socket,
// without connecting to it: virtiofsd serves exactly one connection, so a test
// connection would use it up.
package sockwait

import (
	"context"
	"errors"
)

// ErrExited is returned when the process that was to create the socket ended first.
var ErrExited = errors.New("exited before listening")

// Listening waits until a socket at path accepts connections (its file exists
// and it is in the kernel's list of listening sockets). It returns ErrExited as
// soon as exited is closed, and ctx's error when ctx ends.
func Listening(ctx context.Context, path string, exited <-chan struct{}) error {
	return listening(ctx, path, exited)
}
