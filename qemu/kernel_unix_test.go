//go:build unix

package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

// While another run extracts the same kernel (it holds the cache's lock for
// it), this run boots the bzImage rather than wait.
func TestResolveKernelBusy(t *testing.T) {
	img := testBzImage(t, testVmlinux(true))
	vm, cacheDir := kernelTest(t, img)
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock-"+hex.EncodeToString(sum[:])), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	log := resolveOK(t, vm, vmm.Boot)
	if vm.BootKernel != "" || !log.said("another run is decompressing") {
		t.Errorf("BootKernel %q, details %q", vm.BootKernel, log.details)
	}
	lock.Close() // the other run is done (or died): the next run extracts
	if log = resolveOK(t, vm, vmm.Boot); vm.BootKernel == "" {
		t.Errorf("after the lock was released: details %q", log.details)
	}
}
