package wire

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// WriteTimeout bounds how long one frame may wait to be written, and (on
// the host, whose keepalive uses it) how long a ping may go unanswered: a
// guest under TCG, or paused, may stall for a while without having gone.
const WriteTimeout = 2 * time.Minute

// YamuxConfig is the yamux configuration of both ends; the host turns its
// keepalive on (agent.LinkOptions).
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
	// A larger window than yamux's 256 KiB keeps a port busy.
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = io.Discard
	return c
}
