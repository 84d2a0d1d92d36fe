// Package testsystem builds a tiny NixOS-shaped system for sonix-run's
// end-to-end tests and demo, without Nix: a store directory with a static
// busybox, a distribution kernel, a busybox initrd and a toplevel holding
// boot.json (bootspec v1) and a stage 2 init.
//
// The initrd loads the virtio and virtiofs drivers (and the drivers of the
// other devices the machine has; ext4 only with sonix.state), mounts a tmpfs
// root, mounts the host store (virtiofs tag "store") read-only on /nix/store
// and the kernel modules (tag "modules", optional) on /lib/modules, and
// switches to the init= program. That init prints "sonix-test: key=value"
// report lines, starts sonix-run's guest agent when the machine has its port
// (again whenever it exits with sonix.agent=respawn), and then acts on the
// kernel parameter sonix.test= (poweroff, the default; panic; reboot; hang;
// serve; shell).
//
// The kernel and busybox come from the host: run scripts/install-test-deps,
// then FindInputs locates them.
package testsystem

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Inputs are the host files a test system is built from.
type Inputs struct {
	Arch          string // "x86_64"
	Kernel        string // host path of vmlinuz/bzImage
	ModulesDir    string // a lib/modules directory holding <KernelVersion>/
	KernelVersion string
	Busybox       string // static busybox binary
}

// Options change what Build writes.
type Options struct {
	// Salt is mixed into every store hash so that each build is a store the
	// project has never seen. "" gives deterministic paths.
	Salt string
	// KernelParams are the bootspec kernelParams. nil means ["loglevel=4"].
	KernelParams []string
}

// System says where a built test system is. All paths are host paths.
type System struct {
	Dir           string // the directory passed to Build, made absolute
	StoreDir      string // Dir/store: share it as the guest's /nix/store
	ModulesDir    string // the lib/modules directory: share it as /lib/modules
	BootJSON      string // Toplevel/boot.json
	Toplevel      string // Dir/store/<hash>-sonix-test-system
	KernelVersion string
}

// GuestStore is where the store is mounted in the guest.
const GuestStore = "/nix/store"

// CacheDir is where scripts/install-test-deps puts what it fetches:
// $SONIX_TEST_CACHE, else $XDG_CACHE_HOME/sonix-run, else ~/.cache/sonix-run.
func CacheDir() (string, error) {
	if d := os.Getenv("SONIX_TEST_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "sonix-run"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot find the cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "sonix-run"), nil
}

type archInfo struct {
	machine    elf.Machine
	kernelFile string // file name of the kernel in its store path
	goarch     string
}

var arches = map[string]archInfo{
	"x86_64":  {elf.EM_X86_64, "bzImage", "amd64"},
	"aarch64": {elf.EM_AARCH64, "Image", "arm64"},
}

// FindInputs locates the kernel, its modules and a static busybox for arch:
// the kernel tree that scripts/install-test-deps unpacked under
// CacheDir()/kernel/<arch>/ and busybox at $SONIX_TEST_BUSYBOX, /bin/busybox
// (for the host's architecture) or CacheDir()/busybox/<arch>/busybox.
func FindInputs(arch string) (Inputs, error) {
	in := Inputs{Arch: arch}
	ai, ok := arches[arch]
	if !ok {
		return in, fmt.Errorf("testsystem: unsupported architecture %q (supported: x86_64, aarch64)", arch)
	}
	cache, err := CacheDir()
	if err != nil {
		return in, err
	}
	var problems []string

	kdir := filepath.Join(cache, "kernel", arch)
	vers, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	var candidates []string
	for _, k := range vers {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if st, err := os.Stat(filepath.Join(kdir, "lib", "modules", v)); err == nil && st.IsDir() {
			candidates = append(candidates, v)
		}
	}
	if len(candidates) == 0 {
		problems = append(problems, fmt.Sprintf("no kernel with modules in %s (want boot/vmlinuz-VERSION and lib/modules/VERSION/)", kdir))
	} else {
		sort.Slice(candidates, func(i, j int) bool { return versionLess(candidates[i], candidates[j]) })
		v := candidates[len(candidates)-1]
		in.KernelVersion = v
		in.Kernel = filepath.Join(kdir, "boot", "vmlinuz-"+v)
		in.ModulesDir = filepath.Join(kdir, "lib", "modules")
		if f, err := os.Open(in.Kernel); err != nil {
			problems = append(problems, fmt.Sprintf("kernel %s is not readable: %v", in.Kernel, err))
		} else {
			f.Close()
		}
	}

	bb := os.Getenv("SONIX_TEST_BUSYBOX")
	if bb == "" {
		if ai.goarch == runtime.GOARCH {
			bb = "/bin/busybox"
		} else {
			bb = filepath.Join(cache, "busybox", arch, "busybox")
		}
	}
	if err := checkStaticBinary(bb, ai.machine); err != nil {
		problems = append(problems, fmt.Sprintf("busybox: %v", err))
	} else {
		in.Busybox = bb
	}

	if len(problems) > 0 {
		return in, fmt.Errorf("testsystem: missing inputs for %s: %s; run scripts/install-test-deps", arch, strings.Join(problems, "; "))
	}
	return in, nil
}

// checkStaticBinary checks that p is an executable ELF file for machine m
// with no program interpreter (statically linked).
func checkStaticBinary(p string, m elf.Machine) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != m {
		return fmt.Errorf("%s is for %v, want %v", p, f.Machine, m)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (want a static busybox, Debian package busybox-static)", p)
		}
	}
	return nil
}

// versionLess compares version strings piecewise, numbers numerically.
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '~' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		switch {
		case ea == nil && eb == nil:
			if na != nb {
				return na < nb
			}
		case pa[i] != pb[i]:
			return pa[i] < pb[i]
		}
	}
	return len(pa) < len(pb)
}

// bootspec is the org.nixos.bootspec.v1 object. Fields are in key order.
type bootspec struct {
	Init         string   `json:"init"`
	Initrd       string   `json:"initrd"`
	Kernel       string   `json:"kernel"`
	KernelParams []string `json:"kernelParams"`
	Label        string   `json:"label"`
	System       string   `json:"system"`
	Toplevel     string   `json:"toplevel"`
}

type bootJSON struct {
	V1              bootspec            `json:"org.nixos.bootspec.v1"`
	Specialisations map[string]bootJSON `json:"org.nixos.specialisation.v1"`
}

// Build writes a NixOS-shaped store into dir (dir/store/<hash>-name paths
// and dir/result pointing at the toplevel) and returns where things are.
// Store paths already present are replaced.
func Build(dir string, in Inputs, opt Options) (*System, error) {
	ai, ok := arches[in.Arch]
	if !ok {
		return nil, fmt.Errorf("testsystem: unsupported architecture %q", in.Arch)
	}
	if in.Kernel == "" || in.ModulesDir == "" || in.KernelVersion == "" || in.Busybox == "" {
		return nil, errors.New("testsystem: incomplete Inputs (use FindInputs)")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		return nil, err
	}
	params := opt.KernelParams
	if params == nil {
		params = []string{"loglevel=4"}
	}
	ver := in.KernelVersion

	// busybox
	bbData, err := os.ReadFile(in.Busybox)
	if err != nil {
		return nil, fmt.Errorf("testsystem: %w", err)
	}
	bbName := "busybox"
	bbPath := storeHash(bbName, opt.Salt, bbData) + "-" + bbName
	if err := writeBusybox(filepath.Join(store, bbPath), bbData); err != nil {
		return nil, err
	}
	bbBin := path.Join(GuestStore, bbPath, "bin")

	// kernel
	kData, err := os.ReadFile(in.Kernel)
	if err != nil {
		return nil, fmt.Errorf("testsystem: %w", err)
	}
	kName := "linux-" + ver
	kPath := storeHash(kName, opt.Salt, kData) + "-" + kName
	if err := freshDir(filepath.Join(store, kPath)); err != nil {
		return nil, err
	}
	if err := linkOrCopy(in.Kernel, filepath.Join(store, kPath, ai.kernelFile), kData); err != nil {
		return nil, err
	}
	guestKernel := path.Join(GuestStore, kPath, ai.kernelFile)

	// initrd
	initrd, err := buildInitrd(bbData, filepath.Join(in.ModulesDir, ver))
	if err != nil {
		return nil, err
	}
	irName := "initrd-sonix-test"
	irPath := storeHash(irName, opt.Salt, initrd) + "-" + irName
	if err := freshDir(filepath.Join(store, irPath)); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(store, irPath, "initrd"), initrd, 0o444); err != nil {
		return nil, err
	}
	guestInitrd := path.Join(GuestStore, irPath, "initrd")

	// the guest agent
	agentData, err := agentBinary(in.Arch)
	if err != nil {
		return nil, err
	}
	agName := "sonix-run-agent"
	agPath := storeHash(agName, opt.Salt, agentData) + "-" + agName
	if err := freshDir(filepath.Join(store, agPath)); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(store, agPath, "bin"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(store, agPath, "bin", agName), agentData, 0o555); err != nil {
		return nil, err
	}
	guestAgent := path.Join(GuestStore, agPath, "bin", agName)

	// toplevel
	init := stage2Script(bbBin, guestAgent)
	sysName := "sonix-test-system"
	sysPath := storeHash(sysName, opt.Salt, []byte(init), []byte(guestKernel), []byte(guestInitrd),
		[]byte(strings.Join(params, "\x00")), []byte(in.Arch)) + "-" + sysName
	top := filepath.Join(store, sysPath)
	guestTop := path.Join(GuestStore, sysPath)
	spec := bootspec{
		Init:         guestTop + "/init",
		Initrd:       guestInitrd,
		Kernel:       guestKernel,
		KernelParams: params,
		Label:        "sonix-run test system (Linux " + ver + ")",
		System:       in.Arch + "-linux",
		Toplevel:     guestTop,
	}
	// Two specialisations: "shell" for people (an interactive shell on the
	// console), "debug" for tests (its own kernelParams, then poweroff).
	withParam := func(p string) bootJSON {
		s := spec
		s.KernelParams = append(append([]string{}, params...), p)
		return bootJSON{V1: s, Specialisations: map[string]bootJSON{}}
	}
	bj, err := json.MarshalIndent(bootJSON{
		V1:              spec,
		Specialisations: map[string]bootJSON{"shell": withParam("sonix.test=shell"), "debug": withParam("sonix.special=debug")},
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	bj = append(bj, '\n')
	if err := freshDir(top); err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"init", init, 0o555},
		{"boot.json", string(bj), 0o444},
		{"kernel-params", strings.Join(params, " ") + "\n", 0o444},
		{"system", in.Arch + "-linux\n", 0o444},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(top, f.name), []byte(f.data), f.mode); err != nil {
			return nil, err
		}
		// WriteFile's mode is filtered by the umask.
		if err := os.Chmod(filepath.Join(top, f.name), f.mode); err != nil {
			return nil, err
		}
	}
	if err := os.Symlink(guestKernel, filepath.Join(top, "kernel")); err != nil {
		return nil, err
	}
	if err := os.Symlink(guestInitrd, filepath.Join(top, "initrd")); err != nil {
		return nil, err
	}

	result := filepath.Join(dir, "result")
	if err := os.Remove(result); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.Symlink(top, result); err != nil {
		return nil, err
	}
	return &System{
		Dir:           dir,
		StoreDir:      store,
		ModulesDir:    in.ModulesDir,
		BootJSON:      filepath.Join(top, "boot.json"),
		Toplevel:      top,
		KernelVersion: ver,
	}, nil
}

// freshDir makes p an empty directory, removing what was there.
func freshDir(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return err
	}
	return os.Mkdir(p, 0o755)
}

func writeBusybox(p string, data []byte) error {
	if err := freshDir(p); err != nil {
		return err
	}
	bin := filepath.Join(p, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o555); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(bin, "busybox"), 0o555); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(bin, a)); err != nil {
			return err
		}
	}
	return nil
}

// linkOrCopy hard-links src to dst, or writes data (src's content) there when
// a hard link is impossible (another file system, no permission).
func linkOrCopy(src, dst string, data []byte) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	if err := os.WriteFile(dst, data, 0o444); err != nil {
		return err
	}
	return os.Chmod(dst, 0o444)
}

// buildInitrd returns the gzip'd newc cpio initrd: busybox and its applets in
// /bin, the stage 1 /init, and the modules it loads under /lib/modules.
func buildInitrd(busybox []byte, modRoot string) ([]byte, error) {
	mods, err := resolveModules(modRoot, stage1Modules)
	if err != nil {
		return nil, fmt.Errorf("testsystem: %w", err)
	}
	ver := filepath.Base(modRoot)

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	cw := newCPIOWriter(zw)
	var werr error
	check := func(err error) {
		if werr == nil {
			werr = err
		}
	}
	dirs := map[string]bool{}
	var mkdirs func(d string)
	mkdirs = func(d string) {
		if d == "." || d == "/" || dirs[d] {
			return
		}
		mkdirs(path.Dir(d))
		dirs[d] = true
		check(cw.Dir(d, 0o755))
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "sysroot", "lib/modules/" + ver, "tmp"} {
		mkdirs(d)
	}
	// The kernel opens /dev/console for init before anything is mounted.
	check(cw.CharDev("dev/console", 0o600, 5, 1))
	check(cw.CharDev("dev/null", 0o666, 1, 3))
	check(cw.File("bin/busybox", 0o755, busybox))
	for _, a := range busyboxApplets {
		check(cw.Symlink("bin/"+a, "busybox"))
	}
	var loads []stage1Load
	for _, m := range mods {
		data, comp, err := (&moduleIndex{root: modRoot}).readModule(m.rel)
		if err != nil {
			return nil, fmt.Errorf("testsystem: %w", err)
		}
		rel := m.rel
		switch comp {
		case "zstd":
			return nil, fmt.Errorf("testsystem: module %s is zstd-compressed; busybox insmod cannot load it and it cannot be decompressed here: use a kernel whose modules are uncompressed, gzip or xz", filepath.Join(modRoot, m.rel))
		case "":
			rel = strings.TrimSuffix(rel, ".gz")
		}
		p := path.Join("lib/modules", ver, rel)
		mkdirs(path.Dir(p))
		check(cw.File(p, 0o644, data))
		var when []string
		if !slices.Contains(m.when, always) {
			when = m.when
		}
		loads = append(loads, stage1Load{path: "/" + p, when: when})
	}
	check(cw.File("init", 0o755, []byte(stage1Script(ver, loads))))
	check(cw.Close())
	if werr != nil {
		return nil, werr
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
