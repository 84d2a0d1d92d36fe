package launcher

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/nixbuild"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

// registrationTimeout bounds asking the host's Nix for the closure.
const registrationTimeout = 30 * time.Second

// addRegistration writes the closure registration of toplevel into the run
// directory's meta/ and shares it with the guest, when the host has Nix and
// boots from its own /nix/store; otherwise it says nothing and the guest
// explains what is missing. Failures are notices, never fatal: the VM boots
// the same, only Nix inside knows less.
func (i *Instance) addRegistration(ctx context.Context, toplevel string) {
	if i.cfg.StoreDir != config.DefaultStoreDir || !strings.HasPrefix(toplevel, config.DefaultStoreDir+"/") {
		return
	}
	nixStore, err := exec.LookPath("nix-store")
	if err != nil {
		return
	}
	dir := rundir.MetaDir(i.vm.RunDir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		i.msgs.notice("sonix-run: the guest's Nix database: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, registrationTimeout)
	defer cancel()
	if err := nixbuild.DumpRegistration(ctx, nixStore, toplevel, filepath.Join(dir, config.RegistrationFile)); err != nil {
		i.msgs.notice("sonix-run: the guest's Nix database will not know its store: %v", err)
		return
	}
	i.vm.Shares = append(i.vm.Shares, vmm.Share{Tag: config.MetaTag, HostDir: dir, ReadOnly: true, Cache: vmm.CacheAuto})
}
