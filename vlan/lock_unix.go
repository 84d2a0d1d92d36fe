//go:build unix

package vlan

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// lanLock is an exclusive flock on a LAN's lock file. It is held only for
// short, local work: by a joiner from its check for a running switch to the
// end of its join (starting the switch if there was none), and by a switch
// that found itself idle, while it removes its files. So "is a switch there?"
// and "start one" are one step, and a switch never goes away under a joiner.
type lanLock struct {
	f    *os.File
	path string
}

// lockLAN takes the LAN's lock. flock can neither be given a deadline nor be
// interrupted from Go, so it is tried without blocking, again and again with
// a growing pause (1 ms up to 50 ms), until ctx ends; holders keep it for
// milliseconds. An error matching fs.ErrNotExist means the per-user
// directory is gone (the last switch removed it): make it again and retry.
func lockLAN(ctx context.Context, p lanPaths) (*lanLock, error) {
	pause := time.Millisecond
	for {
		// A link at the lock's name is replaced, never followed.
		f, err := owndir.OpenLock(p.base, filepath.Base(p.lock()))
		if err != nil {
			return nil, err
		}
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
				f.Close()
				return nil, fmt.Errorf("locking %s: %w", p.lock(), err)
			}
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				f.Close()
				return nil, fmt.Errorf("waiting for the lock %s: %w", p.lock(), ctx.Err())
			case <-t.C:
			}
			pause = min(2*pause, 50*time.Millisecond)
		}
		// The holder before us may have removed the file (a switch going
		// away does, while holding it): then our lock is on a file no one
		// else will open, and we must lock the current one instead.
		held, err1 := f.Stat()
		now, err2 := os.Lstat(p.lock())
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return &lanLock{f: f, path: p.lock()}, nil
		}
		f.Close()
		if err1 != nil {
			return nil, err1
		}
	}
}

func (l *lanLock) unlock() { l.f.Close() }

// removeAndUnlock removes the lock file while still holding it (see lockLAN
// for how waiters notice).
func (l *lanLock) removeAndUnlock() {
	os.Remove(l.path)
	l.f.Close()
}
