package launcher

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
	"github.com/sonix-run/sonix-run/vmm"
)

// The per-run metadata share: what the guest should know about itself that
// only the host can tell (nix/guest-module.nix reads it).
const (
	// MetaTag is the virtio-fs tag of the per-run metadata directory.
	MetaTag = "sonix-run-meta"
	// RegistrationFile, in it, is `nix-store --dump-db` of the system's
	// closure: the guest loads it so that Nix inside knows the store paths
	// it sees (the store is shared, its database is not).
	RegistrationFile = "registration"
)

// registrationTimeout bounds asking the host's Nix for the closure.
const registrationTimeout = 30 * time.Second

// addRegistration writes the closure registration of toplevel into the run
// directory's meta/ and shares it with the guest, when the host has Nix and
// boots from its own /nix/store; otherwise it says nothing and the guest
// explains what is missing. Failures are notices, never fatal: the VM boots
// the same, only Nix inside knows less.
func (i *Instance) addRegistration(ctx context.Context, toplevel string) {
	if i.cfg.StoreDir != DefaultStoreDir || !strings.HasPrefix(toplevel, DefaultStoreDir+"/") {
		return
	}
	nixStore, err := exec.LookPath("nix-store")
	if err != nil {
		return
	}
	dir := filepath.Join(i.vm.RunDir, "meta")
	if err := os.Mkdir(dir, 0o755); err != nil {
		i.msgs.notice("sonix-run: the guest's Nix database: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, registrationTimeout)
	defer cancel()
	if err := dumpRegistration(ctx, nixStore, toplevel, filepath.Join(dir, RegistrationFile)); err != nil {
		i.msgs.notice("sonix-run: the guest's Nix database will not know its store: %v", err)
		return
	}
	i.vm.Shares = append(i.vm.Shares, vmm.Share{Tag: MetaTag, HostDir: dir, ReadOnly: true, Cache: vmm.CacheAuto})
}

// dumpRegistration runs nix-store -qR, then --dump-db of what it lists.
func dumpRegistration(ctx context.Context, nixStore, toplevel, out string) error {
	var closure, stderr bytes.Buffer
	q := exec.Command(nixStore, "--query", "--requisites", toplevel)
	q.Stdout, q.Stderr = &closure, &stderr
	if err := proc.Run(ctx, q, time.Second); err != nil {
		return fmt.Errorf("nix-store --query --requisites %s: %v: %s", toplevel, err, strings.TrimSpace(stderr.String()))
	}
	paths := strings.Fields(closure.String())
	if len(paths) == 0 {
		return fmt.Errorf("nix-store --query --requisites %s listed nothing", toplevel)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	stderr.Reset()
	d := exec.Command(nixStore, append([]string{"--dump-db"}, paths...)...)
	d.Stdout, d.Stderr = f, &stderr
	err = proc.Run(ctx, d, time.Second)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("nix-store --dump-db: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
