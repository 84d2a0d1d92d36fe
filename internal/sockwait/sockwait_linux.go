package sockwait

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func listening(ctx context.Context, path string, exited <-chan struct{}) error {
	// Watch the directory first, then look: a socket created in between is
	// seen by the look, one created later by the watch.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	watch := os.NewFile(uintptr(fd), "inotify") // non-blocking: reads go through Go's poller
	defer watch.Close()
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ATTRIB); err != nil {
		return fmt.Errorf("watching %s: %w", filepath.Dir(path), err)
	}
	events := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := watch.Read(buf); err != nil {
				return // closed by the deferred Close
			}
			select {
			case events <- struct{}{}:
			default:
			}
		}
	}()

	// bind() creates the file and listen() follows within microseconds; no
	// event marks listen(), so that gap alone is bridged by short re-checks.
	var recheck <-chan time.Time
	backoff := time.Millisecond
	for {
		ok, err := isListening(path)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		recheck = nil
		if _, err := os.Lstat(path); err == nil {
			recheck = time.After(backoff)
			backoff = min(2*backoff, 50*time.Millisecond)
		}
		select {
		case <-events:
		case <-recheck:
		case <-exited:
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// isListening reports whether /proc/net/unix lists a listening socket bound to path.
func isListening(path string) (bool, error) {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return false, err
	}
	defer f.Close()
	const acceptCon = 0x10000 // __SO_ACCEPTCON: the socket is listening
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path (the path may hold spaces)
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || strings.Join(fields[7:], " ") != path {
			continue
		}
		var flags uint64
		if _, err := fmt.Sscanf(fields[3], "%x", &flags); err == nil && flags&acceptCon != 0 {
			return true, nil
		}
	}
	return false, sc.Err()
}
