//go:build linux

package guest

import (
	"sync"
	"syscall"
	"time"
)

// killer signals a command's process group: on request, and to end it
// (SIGTERM, then SIGKILL after the grace).
type killer struct {
	pgid  int
	grace time.Duration

	mu          sync.Mutex
	terminating bool
	finished    bool
	stop        chan struct{}
	done        chan struct{}
}

func newKiller(pgid int, grace time.Duration) *killer {
	return &killer{pgid: pgid, grace: grace, stop: make(chan struct{}), done: make(chan struct{})}
}

func (k *killer) signal(sig syscall.Signal) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.finished {
		syscall.Kill(-k.pgid, sig)
	}
}

// terminate sends SIGTERM now and SIGKILL after the grace.
func (k *killer) terminate() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.terminating || k.finished {
		return
	}
	k.terminating = true
	syscall.Kill(-k.pgid, syscall.SIGTERM)
	go func() {
		defer close(k.done)
		t := time.NewTimer(k.grace)
		defer t.Stop()
		select {
		case <-t.C:
			k.signal(syscall.SIGKILL)
		case <-k.stop:
		}
	}()
}

// finish ends the killer once the command has been waited for. A command
// that was asked to end takes what is left of its process group with it.
func (k *killer) finish() {
	k.mu.Lock()
	terminating := k.terminating
	if terminating {
		syscall.Kill(-k.pgid, syscall.SIGKILL)
	}
	k.finished = true
	k.mu.Unlock()
	if terminating {
		close(k.stop)
		<-k.done
	}
}
