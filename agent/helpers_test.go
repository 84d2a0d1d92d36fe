package agent_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

var sprintf = fmt.Sprintf

// checkGoroutines fails the test if goroutines started during it are
// still running once its cleanups have run (it must be called first, so
// that its cleanup runs last).
func checkGoroutines(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines left running (%d before the test):\n%s", runtime.NumGoroutine()-base, base, buf[:runtime.Stack(buf, true)])
				return
			}
			// Polling is the only way to observe goroutines ending.
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
