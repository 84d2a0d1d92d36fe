package agent

import (
	"io"

	"github.com/sonix-run/sonix-run/agent/transport"
)

// The host's end of the agent's port is package transport's Link; these
// names keep it where the operations are.

// Link is the host's end of the agent's port: see transport.Link.
type Link = transport.Link

// LinkOptions configure a Link: see transport.LinkOptions.
type LinkOptions = transport.LinkOptions

// SessionError is why a session with the guest agent ended, or why the
// link did; operations on its streams return it.
type SessionError = transport.SessionError

// NewLink starts the host's end over conn, the host side of the agent's
// port (for QEMU, the port's Unix socket). The guest agent need not be
// running yet. Close ends the link and closes conn. Whoever sees the
// guest's side of the port open and close (QEMU's VSERPORT_CHANGE) tells
// the link with PortOpen.
func NewLink(conn io.ReadWriteCloser, opts LinkOptions) *Link {
	return transport.NewLink(conn, opts)
}

// Defaults of LinkOptions.
const (
	DefaultKeepAliveInterval = transport.DefaultKeepAliveInterval
	DefaultKeepAliveTimeout  = transport.DefaultKeepAliveTimeout
	DefaultGoneWait          = transport.DefaultGoneWait
)

// Errors a SessionError wraps, for errors.Is: see package transport.
var (
	// ErrAgentRestarted: a new guest agent announced itself, so the
	// session of the previous one is over.
	ErrAgentRestarted = transport.ErrAgentRestarted
	// ErrAgentGone: the guest agent's port closed (the agent stopped or
	// was killed) and no new agent has announced itself (Link.PortOpen).
	ErrAgentGone = transport.ErrAgentGone
	// ErrAgentSilent: the guest agent did not answer for
	// KeepAliveTimeout, so its session was given up.
	ErrAgentSilent = transport.ErrAgentSilent
	// ErrVersion: the guest agent speaks another protocol version.
	ErrVersion = transport.ErrVersion
	// ErrProtocol: the guest broke the protocol inside a session; the
	// link ends for good.
	ErrProtocol = transport.ErrProtocol
	// ErrVMEnded: the port's connection ended: the VM has ended. The
	// link ends for good.
	ErrVMEnded = transport.ErrVMEnded
	// ErrLinkClosed: Close was called.
	ErrLinkClosed = transport.ErrLinkClosed
)
