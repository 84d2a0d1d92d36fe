//go:build !linux && !darwin

package control

import (
	"errors"
	"net"
)

// peerUID cannot tell who is at the other end of a socket here: every
// control connection is refused rather than trusted.
func peerUID(c *net.UnixConn) (int, error) {
	return -1, errors.New("this system gives sonix-run no way to tell who is at the other end of a socket")
}
