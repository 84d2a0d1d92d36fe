//go:build unix

package vz

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// agentSocketBuffer is asked for as each end's send and receive buffer:
// macOS gives a Unix stream socket 8 KiB each way by default, which would
// make every 8 KiB of a command's output a round trip through the
// framework. A host that refuses it keeps its default, which only costs
// speed.
const agentSocketBuffer = 512 << 10

// agentPort is the host's side of the guest agent's virtio console port. One
// end of a socket pair is the port's attachment: the framework sends the
// guest what the host writes into it and writes what the guest sends. The
// other end is the host's connection. A socket rather than two pipes, so
// that one stream carries both directions and shutdown can end it for good
// (see end).
type agentPort struct {
	guest *os.File // handed to the framework

	mu    sync.Mutex
	host  net.Conn // nil once taken
	taken bool
	ended bool
}

func newAgentPort() (*agentPort, error) {
	// ForkLock: no child may inherit the pair between socketpair and
	// close-on-exec (darwin has no SOCK_CLOEXEC).
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("agent port: socketpair: %w", err)
	}
	for _, fd := range fds {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, agentSocketBuffer)
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, agentSocketBuffer)
	}
	guest := os.NewFile(uintptr(fds[0]), "vz-agent-guest")
	hostFile := os.NewFile(uintptr(fds[1]), "vz-agent-host")
	host, err := net.FileConn(hostFile) // a duplicate, in Go's poller
	hostFile.Close()
	if err != nil {
		guest.Close()
		return nil, fmt.Errorf("agent port: %w", err)
	}
	return &agentPort{guest: guest, host: host}, nil
}

// take hands out the host's connection, once: the port is one stream for
// the VM's life, which the agent protocol multiplexes.
func (a *agentPort) take() (io.ReadWriteCloser, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.ended:
		return nil, errors.New("the VM has ended; its agent port is closed")
	case a.taken:
		return nil, errors.New("the agent port is already connected (one connection for the VM's life)")
	}
	a.taken = true
	c := a.host
	a.host = nil
	return c, nil
}

// end closes the port once the VM has ended. shutdown acts on the socket,
// not on one descriptor, so even if the framework's VM service still holds
// a copy of the guest's end, the host's reader gets the guest's last bytes
// and then end-of-file instead of waiting for ever. A connection nobody took
// is closed; a taken one is its taker's to close.
func (a *agentPort) end() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return
	}
	a.ended = true
	if rc, err := a.guest.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	}
	a.guest.Close()
	if a.host != nil {
		a.host.Close()
		a.host = nil
	}
}
