// Package transport carries sonix-run's agent protocol over the agent's
// virtio console port, for both ends (docs/protocol.md, "Transport"): the
// preamble and its answer, one yamux session per run of the guest agent,
// stale bytes skipped, the resync line, the host's keepalive and the port's
// open and close events. Package agent runs operations over the host's
// end (Link); package agent/guest serves them on the guest's (Serve). What
// a stream carries is package wire's.
package transport

import (
	"errors"
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// WriteTimeout bounds how long one of the guest's frames may wait to be
// written: a host that is paused or stalled (e.g. stopped in a debugger)
// may not read for a while without having gone.
const WriteTimeout = 2 * time.Minute

// Defaults of LinkOptions.
const (
	// DefaultKeepAliveInterval: the host pings a live session this often.
	DefaultKeepAliveInterval = 5 * time.Second
	// DefaultKeepAliveTimeout: a ping (or any frame of the host's) that
	// waits this long gives the session up. A guest under TCG on a loaded
	// host answers a ping within a second; one paused or stalled longer
	// than this loses its session and starts a new one when it resumes.
	// It is how a host that is not told of the port closing (vz) learns
	// that the agent has gone.
	DefaultKeepAliveTimeout = 20 * time.Second
	// DefaultGoneWait: once the guest's port has closed after a session,
	// an operation waits at most this long for a new agent to announce
	// itself (a restart under way) before it fails with ErrAgentGone.
	DefaultGoneWait = time.Second
)

// MaxStreamWindow is yamux's per-stream window, each way: what one
// operation may have in flight before the receiver reads it.
const MaxStreamWindow = 2 << 20

// YamuxConfig is the yamux configuration of both ends; the host turns its
// keepalive on (LinkOptions).
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	// The guest never pings: only the host needs to know whether the
	// other end is still there. yamux answers pings either way.
	c.EnableKeepAlive = false
	// 0 disables the open timeout: an agent that is busy answers when it
	// can.
	c.StreamOpenTimeout = 0
	c.ConnectionWriteTimeout = WriteTimeout
	// After closing its side of a stream, an end waits this long for the
	// other's close before resetting the stream and forgetting it.
	c.StreamCloseTimeout = time.Minute
	// A larger window than yamux's 256 KiB keeps a port busy while the
	// other end is scheduled: under TCG the two ends take turns.
	c.MaxStreamWindowSize = MaxStreamWindow
	c.LogOutput = io.Discard
	return c
}

// Errors a SessionError wraps, for errors.Is.
var (
	// ErrAgentRestarted: a new guest agent announced itself, so the
	// session of the previous one is over.
	ErrAgentRestarted = errors.New("the guest agent restarted")
	// ErrAgentGone: the guest agent's port closed (the agent stopped or
	// was killed), and no new agent has announced itself.
	ErrAgentGone = errors.New("the guest agent's port closed (the agent stopped)")
	// ErrAgentSilent: the guest agent did not answer for
	// KeepAliveTimeout, so its session was given up; what its operations
	// did is unknown.
	ErrAgentSilent = errors.New("the guest agent stopped answering")
	// ErrVersion: the guest agent speaks another protocol version.
	ErrVersion = errors.New("the guest agent speaks another protocol version")
	// ErrProtocol: the guest broke the protocol inside a session; the
	// link ends for good.
	ErrProtocol = errors.New("the guest broke the agent protocol")
	// ErrVMEnded: the port's connection ended (for QEMU, its socket
	// closed: the VM has ended); the link ends for good.
	ErrVMEnded = errors.New("the VM ended")
	// ErrLinkClosed: Close was called.
	ErrLinkClosed = errors.New("the agent link was closed")
)

// SessionError is why a session with the guest agent ended, or why the
// link did; operations on its streams return it.
type SessionError struct {
	Msg string
	Err error // one of the Err values above, with the cause where there is one
}

func (e *SessionError) Error() string { return e.Msg }
func (e *SessionError) Unwrap() error { return e.Err }
