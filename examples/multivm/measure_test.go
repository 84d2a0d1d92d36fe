package multivm_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/harness"
	"github.com/sonix-run/sonix-run/vmm"
)

// measureEnv, set to a list of counts such as "1,2,4,8", makes
// TestMeasureConcurrentBoots boot that many VMs at once, for each count in
// turn, and log how long each took to answer its first command: what
// decides how many VMs a CI runner fits (go test -parallel). Run it alone,
// on an otherwise idle runner, with -v.
const measureEnv = "SONIX_MEASURE_BOOTS"

func TestMeasureConcurrentBoots(t *testing.T) {
	spec := os.Getenv(measureEnv)
	if spec == "" {
		t.Skipf("set %s=1,2,4,8 to measure", measureEnv)
	}
	cfg := pairConfig(t, "server")
	cfg.Accel = vmm.AccelTCG // what a CI runner without KVM has
	for _, field := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(field)
		if err != nil || n < 1 || n > 64 {
			t.Fatalf("%s=%q: expected counts of 1 to 64, separated by commas", measureEnv, spec)
		}
		t.Run(fmt.Sprintf("%d-VMs", n), func(t *testing.T) {
			began := time.Now()
			took := make([]time.Duration, n)
			var wg sync.WaitGroup
			vms := make([]*harness.VM, n)
			for i := range vms {
				vms[i] = harness.StartT(t, cfg)
			}
			for i, vm := range vms {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), harness.DefaultTimeout)
					defer cancel()
					if _, err := vm.Succeed(ctx, "true"); err != nil {
						t.Error(err)
					}
					took[i] = time.Since(began)
				}()
			}
			wg.Wait()
			slices.Sort(took)
			t.Logf("%d VMs booting at once: first command answered after %v (median), %v (slowest)",
				n, took[n/2].Round(100*time.Millisecond), took[n-1].Round(100*time.Millisecond))
			for _, vm := range vms {
				vm.Close()
			}
		})
	}
}
