package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// findPort finds the device of the virtio port named name: for each
// sysDir/class/virtio-ports/vportNpM, the file name holds the port's name,
// and the device is devDir/vportNpM (devtmpfs creates it; udev's
// /dev/virtio-ports links are not needed).
func findPort(sysDir, devDir, name string) (string, bool) {
	ports, err := os.ReadDir(filepath.Join(sysDir, "class", "virtio-ports"))
	if err != nil {
		return "", false
	}
	for _, p := range ports {
		b, err := os.ReadFile(filepath.Join(sysDir, "class", "virtio-ports", p.Name(), "name"))
		if err == nil && strings.TrimRight(string(b), "\n") == name {
			return filepath.Join(devDir, p.Name()), true
		}
	}
	return "", false
}

// waitForPort looks for the port until it appears or bound has passed.
// Ports appear when the virtio console driver probes, which may be after
// the agent starts; sysfs has no event to wait on, so it looks again
// after a pause.
func waitForPort(ctx context.Context, sysDir, devDir, name string, bound time.Duration) (string, error) {
	deadline := time.Now().Add(bound)
	wait := minRetryWait
	for {
		if dev, ok := findPort(sysDir, devDir, name); ok {
			return dev, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return "", fmt.Errorf("no virtio port named %s (looked in %s/class/virtio-ports for %v)", name, sysDir, bound)
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}
