package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

// A --kernel of another release whose modules tree says the boot-critical
// drivers are modules is refused before anything starts, naming them and
// the fix; --force boots it anyway; a kernel of the system's own release
// is not checked.
func TestPreflight(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	system := fakeBzImage(t, "6.1.0-system (me@box) #1")
	mine := fakeBzImage(t, "6.9.0-mine (me@box) #1")
	modules := t.TempDir()
	tree := filepath.Join(modules, "6.9.0-mine")
	os.MkdirAll(tree, 0o755)
	// virtio_pci and virtiofs as modules: stage 1 could not load them.
	os.WriteFile(filepath.Join(tree, "modules.builtin"), []byte("kernel/fs/fuse/fuse.ko\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "modules.order"), []byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/fuse/virtiofs.ko\n"), 0o644)

	p := &Plan{Config: Config{Kernel: mine, ModulesDir: modules}, VM: &vmm.VM{Arch: vmm.X86_64, Kernel: mine}, SystemKernel: system}
	quiet := func(string, ...any) {}
	err := Preflight(context.Background(), p, quiet)
	t.Logf("refusal: %v", err)
	if err == nil {
		t.Fatal("Preflight accepted it")
	}
	for _, want := range []string{"CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_FS", "modular", "merge_config.sh", "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q:\n%v", want, err)
		}
	}
	p.Config.Force = true
	var warned strings.Builder
	say := func(format string, args ...any) { fmt.Fprintf(&warned, format+"\n", args...) }
	if err := Preflight(context.Background(), p, say); err != nil || !strings.Contains(warned.String(), "booting anyway") {
		t.Errorf("with --force: %v, said %q", err, warned.String())
	}
	p.Config.Force = false
	p.SystemKernel = mine
	if err := Preflight(context.Background(), p, quiet); err != nil {
		t.Errorf("the system's own release: %v", err)
	}
}
