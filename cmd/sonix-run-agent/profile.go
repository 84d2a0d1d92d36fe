//go:build agentprofile

package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// Built with -tags agentprofile, the agent profiles itself for
// bench/README.md's "Profiling the agent": each SIGUSR2 starts a CPU
// profile, the next one writes it to /tmp/sonix-run-agent.N.pprof.
func init() {
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGUSR2)
		var f *os.File
		n := 0
		for range sigs {
			if f == nil {
				n++
				var err error
				if f, err = os.Create(fmt.Sprintf("/tmp/sonix-run-agent.%d.pprof", n)); err != nil {
					continue
				}
				pprof.StartCPUProfile(f)
				continue
			}
			pprof.StopCPUProfile()
			f.Close()
			f = nil
		}
	}()
}
