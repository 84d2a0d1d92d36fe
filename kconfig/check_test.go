package kconfig

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fragmentConfig is the configuration the fragment asks for, as if a kernel
// had been built from nothing else.
func fragmentConfig(t *testing.T, arch string) Config {
	t.Helper()
	text, err := Fragment(arch)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckCompleteConfigIsQuiet(t *testing.T) {
	for _, arch := range Arches {
		r, err := Check(arch, &Kernel{Source: "test", Config: fragmentConfig(t, arch)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Fatal() || len(r.Problems) != 0 || r.String() != "" || len(r.Unchecked) != 0 {
			t.Errorf("%s: a config with the whole fragment got a report:\n%s%v", arch, r, r.Unchecked)
		}
	}
}

func TestCheckNamesMissingAndModular(t *testing.T) {
	c := fragmentConfig(t, x86_64)
	c["VIRTIO_PCI"] = "m"
	c["VIRTIO_FS"] = "m"
	delete(c, "DEVTMPFS")
	c["SERIAL_8250_CONSOLE"] = "n"
	delete(c, "VIRTIO_NET")
	c["DEBUG_INFO"] = "n"
	c["VIRTIO_BLK"] = "m"
	delete(c, "PCI") // unchecked: a prerequisite, not reported itself
	r, err := Check(x86_64, &Kernel{Source: "/src/linux/.config", Config: c})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Fatal() {
		t.Error("not fatal")
	}
	want := []Problem{
		{Option: "CONFIG_VIRTIO_PCI", Modular: true},
		{Option: "CONFIG_VIRTIO_FS", Modular: true},
		{Option: "CONFIG_SERIAL_8250_CONSOLE"},
		{Option: "CONFIG_DEVTMPFS"},
		{Option: "CONFIG_VIRTIO_NET", Feature: "--net user, --vlan"},
		{Option: "CONFIG_VIRTIO_BLK", Modular: true, Feature: "--disk, --state"},
		{Option: "CONFIG_DEBUG_INFO", Feature: "--gdb"},
	}
	if len(r.Problems) != len(want) {
		t.Fatalf("problems %+v, want %+v", r.Problems, want)
	}
	for i := range want {
		if r.Problems[i] != want[i] {
			t.Errorf("problem %d: %+v, want %+v", i, r.Problems[i], want[i])
		}
	}
	s := r.String()
	t.Logf("report:\n%s", s)
	for _, line := range []string{
		"kernel cannot boot imageless: it lacks built-in drivers the boot needs (read from /src/linux/.config)",
		"  modular, but the system's initrd has no modules for this kernel: CONFIG_VIRTIO_PCI CONFIG_VIRTIO_FS",
		"  missing: CONFIG_SERIAL_8250_CONSOLE CONFIG_DEVTMPFS",
		"  missing for --net user, --vlan: CONFIG_VIRTIO_NET",
		"  missing for --gdb: CONFIG_DEBUG_INFO",
		"  modular, loaded only from --modules: CONFIG_VIRTIO_BLK",
		"  fix, in the kernel tree: scripts/kconfig/merge_config.sh .config <(sonix-run kconfig --arch x86_64)",
	} {
		if !strings.Contains(s, line+"\n") {
			t.Errorf("report lacks the line %q", line)
		}
	}
	if n := strings.Count(s, "\n"); n > 8 {
		t.Errorf("report has %d lines, want a few", n)
	}
	if strings.Contains(s, "CONFIG_PCI ") || strings.Contains(s, "CONFIG_PCI\n") {
		t.Error("report names CONFIG_PCI, a prerequisite the preflight does not check")
	}
}

func TestCheckFeaturesOnlyIsNotFatal(t *testing.T) {
	c := fragmentConfig(t, aarch64)
	delete(c, "IKCONFIG")
	delete(c, "IKCONFIG_PROC")
	r, err := Check(aarch64, &Kernel{Source: "test", Config: c})
	if err != nil {
		t.Fatal(err)
	}
	if r.Fatal() {
		t.Error("missing IKCONFIG is fatal")
	}
	s := r.String()
	for _, want := range []string{
		"kernel lacks options some features need (read from test)\n",
		"  missing for sonix-run's preflight (reading the embedded config): CONFIG_IKCONFIG CONFIG_IKCONFIG_PROC\n",
		"ARCH=arm64 scripts/kconfig/merge_config.sh .config <(sonix-run kconfig --arch aarch64)\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

// writeTree writes a lib/modules/RELEASE directory with the given lists.
func writeTree(t *testing.T, builtin, order []string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, mods := range map[string][]string{"modules.builtin": builtin, "modules.order": order} {
		if mods == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(mods, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// modulePaths are module files for every module the table names for arch,
// as a kernel tree lists them (with '-' where the source file has one).
func modulePaths(arch string) []string {
	var out []string
	for _, g := range groups {
		for _, o := range g.options {
			if !o.forArch(arch) {
				continue
			}
			for _, m := range []string{o.module, o.builtinName} {
				if m == "" {
					continue
				}
				if m == "virtio_rng" || m == "amba_pl011" || m == "pvpanic_mmio" {
					m = strings.ReplaceAll(m, "_", "-")
				}
				out = append(out, "kernel/drivers/some/"+m+".ko")
			}
		}
	}
	return out
}

func TestCheckModulesTree(t *testing.T) {
	all := modulePaths(x86_64)
	k, err := FromModulesTree(writeTree(t, all, []string{}))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Check(x86_64, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 || r.String() != "" {
		t.Errorf("every module built in, yet:\n%s", r)
	}
	// Bool options cannot be seen in module lists, except those whose object
	// carries module info.
	for _, u := range r.Unchecked {
		if u == "CONFIG_BINFMT_ELF" || u == "CONFIG_VIRTIO_PCI" {
			t.Errorf("%s is unchecked", u)
		}
	}
	if !contains(r.Unchecked, "CONFIG_DEVTMPFS") {
		t.Errorf("CONFIG_DEVTMPFS is not in Unchecked: %v", r.Unchecked)
	}

	var builtin, order []string
	for _, p := range all {
		switch moduleName(p) {
		case "virtio_pci", "virtio_console", "virtio_rng":
			order = append(order, p)
		case "virtiofs", "virtio_net":
		default:
			builtin = append(builtin, p)
		}
	}
	dir := writeTree(t, builtin, order)
	k, err = FromModulesTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err = Check(x86_64, k)
	if err != nil {
		t.Fatal(err)
	}
	s := r.String()
	t.Logf("report:\n%s", s)
	for _, want := range []string{
		"(read from " + dir + ")\n",
		"for this kernel: CONFIG_VIRTIO_PCI CONFIG_VIRTIO_CONSOLE\n",
		"  missing: CONFIG_VIRTIO_FS\n",
		"  missing for --net user, --vlan: CONFIG_VIRTIO_NET\n",
		"  modular, loaded only from --modules: CONFIG_HW_RANDOM_VIRTIO\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if !r.Fatal() {
		t.Error("not fatal")
	}
}

func TestFromModulesTreeErrors(t *testing.T) {
	if _, err := FromModulesTree(t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither modules.builtin nor modules.order") {
		t.Errorf("empty dir: %v", err)
	}
	dir := writeTree(t, []string{"kernel/a.ko", "not a module path"}, nil)
	if _, err := FromModulesTree(dir); err == nil || !strings.Contains(err.Error(), "modules.builtin: line 2") {
		t.Errorf("bad line: %v", err)
	}
	// Only one list is fine: a tree with no modules at all has no order.
	if k, err := FromModulesTree(writeTree(t, []string{"kernel/fs/fuse/fuse.ko"}, nil)); err != nil || !k.Builtin["fuse"] {
		t.Errorf("builtin only: %+v, %v", k, err)
	}
	if _, err := FromConfigFile(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("missing config file: no error")
	}
	if _, err := FromConfigFile(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as config: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// debianKernel finds the Debian kernel scripts/install-test-deps unpacks:
// its config-RELEASE and lib/modules/RELEASE.
func debianKernel(t *testing.T) (config, modules string) {
	t.Helper()
	cache := os.Getenv("SONIX_TEST_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Skip(err)
		}
		cache = filepath.Join(home, ".cache", "sonix-run")
	}
	configs, _ := filepath.Glob(filepath.Join(cache, "kernel", "x86_64", "boot", "config-*"))
	if len(configs) == 0 {
		t.Skip("no Debian kernel under " + cache + "/kernel/x86_64 (run scripts/install-test-deps)")
	}
	sort.Strings(configs)
	config = configs[len(configs)-1]
	release := strings.TrimPrefix(filepath.Base(config), "config-")
	return config, filepath.Join(cache, "kernel", "x86_64", "lib", "modules", release)
}

// Debian's kernel builds the virtio drivers as modules: both sources say so,
// and they agree on every option a module list can show.
func TestCheckDebianKernel(t *testing.T) {
	configFile, modulesDir := debianKernel(t)
	fromConfig, err := FromConfigFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	fromModules, err := FromModulesTree(modulesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []*Kernel{fromConfig, fromModules} {
		r, err := Check(x86_64, k)
		if err != nil {
			t.Fatal(err)
		}
		s := r.String()
		t.Logf("report from %s:\n%s", k.Source, s)
		if !r.Fatal() {
			t.Errorf("%s: not fatal", k.Source)
		}
		modular := map[string]bool{}
		for _, p := range r.Problems {
			if p.Modular && p.Feature == "" {
				modular[p.Option] = true
			}
		}
		for _, o := range []string{"CONFIG_VIRTIO_PCI", "CONFIG_FUSE_FS", "CONFIG_VIRTIO_FS", "CONFIG_VIRTIO_CONSOLE"} {
			if !modular[o] {
				t.Errorf("%s: %s not reported as modular", k.Source, o)
			}
			if !strings.Contains(s, o) {
				t.Errorf("%s: report does not name %s", k.Source, o)
			}
		}
	}
	// The table's module names match what this kernel calls them.
	for _, g := range groups {
		for _, o := range g.options {
			if o.module == "" || !o.forArch(x86_64) {
				continue
			}
			fromCfg := fromConfig.state(o)
			if fromCfg == stateMissing && fromConfig.Config[o.name] == "" {
				continue // not in this kernel version's Kconfig at all
			}
			if got := fromModules.state(o); got != fromCfg {
				t.Errorf("CONFIG_%s=%s, but module %s looks %v in %s", o.name, fromConfig.Config[o.name], o.module, got, modulesDir)
			}
		}
	}
}

func (s optionState) String() string {
	return [...]string{"built in", "modular", "missing", "unknown"}[s]
}
