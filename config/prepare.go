package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/bootjson"
	"github.com/sonix-run/sonix-run/nixbuild"
	"github.com/sonix-run/sonix-run/vmm"
)

// Plan is a checked run: the normalised Config, the VM it describes and
// the backend that boots it.
type Plan struct {
	Config  Config
	VM      *vmm.VM
	Backend vmm.Backend
	// Toplevel is the system's store path (for the guest's Nix database).
	Toplevel string
	// SystemKernel is boot.json's kernel on the host (for the preflight).
	SystemKernel string
}

// Validate checks everything that can be checked before anything starts:
// flags, boot.json and the files it names, the files the flags name, and
// what the backend can do. It changes nothing, c included. A target that is
// a Nix installable is checked only as far as it can be without building it.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if err := c.CheckValues(); err != nil {
		return err
	}
	if nixbuild.IsInstallable(c.Target) {
		if !c.DryRun {
			if err := nixbuild.Check(c.Target); err != nil {
				return err
			}
		}
		return c.CheckHost()
	}
	_, err := Prepare(c)
	return err
}

// describe is the VM as the Config alone describes it: everything but
// what comes from boot.json (kernel, initrd, init and its parameters, the
// architecture), every host path absolute (helpers run elsewhere:
// virtiofsd chroots into its directory, and a --dry-run script may be
// pasted anywhere).
func (c *Config) describe() *vmm.VM {
	vm := &vmm.VM{
		Name:       c.Name,
		Accel:      c.Accel,
		CPUs:       c.CPUs,
		MemoryMiB:  c.MemoryMiB,
		KernelAsIs: c.KernelAsIs,
		UserParams: append([]string(nil), c.Append...),
		GDBPort:    c.GDBPort,
		GDBWait:    c.GDBWait,
		QEMUArgs:   append([]string(nil), c.QEMUArgs...),
		Rosetta:    c.Rosetta,
		DumpPath:   abs(c.DumpPath),
		Network:    vmm.Network{Mode: c.Net, Forwards: append([]vmm.Forward(nil), c.Forwards...)},
		// The user's devices, whole (a new kind needs nothing here); the
		// store and modules come first, --cwd and --state after.
		Devices: c.Devices,
	}
	vm.Shares = []vmm.Share{{Tag: c.StoreTag, HostDir: abs(c.StoreDir), ReadOnly: true, Cache: vmm.CacheAlways}}
	if c.ModulesDir != "" {
		vm.Shares = append(vm.Shares, vmm.Share{Tag: c.ModulesTag, HostDir: modulesTree(abs(c.ModulesDir)), ReadOnly: true, Cache: vmm.CacheAuto})
	}
	for _, s := range c.Shares {
		s.HostDir = abs(s.HostDir)
		vm.Shares = append(vm.Shares, s)
	}
	vm.Disks = nil
	for _, d := range c.Disks {
		d.Path = abs(d.Path)
		vm.Disks = append(vm.Disks, d)
	}
	if c.Workdir != "" {
		vm.Shares = append(vm.Shares, vmm.Share{Tag: WorkdirTag, HostDir: c.Workdir, ReadOnly: c.WorkdirReadOnly, Cache: vmm.CacheAuto})
	}
	if c.State != "" {
		vm.Disks = append(vm.Disks, vmm.Disk{Path: abs(c.State), Format: stateFormat(c.State), Serial: StateSerial, Create: c.StateSize})
		vm.UserParams = append([]string{StateParam}, vm.UserParams...)
	}
	for _, v := range c.VLANs {
		vm.Network.VLANs = append(vm.Network.VLANs, vmm.VLANPort{VLAN: v})
	}
	return vm
}

func abs(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// Prepare turns a Config (with defaults, values checked, target built)
// into a Plan.
func Prepare(c Config) (*Plan, error) {
	// What the flags name first (named as the user spelled it); the default
	// store only after the target (checkStore).
	if err := c.CheckHost(); err != nil {
		return nil, err
	}
	vm := c.describe()
	c.StoreDir = vm.Shares[0].HostDir
	if c.ModulesDir != "" {
		c.ModulesDir = vm.Shares[1].HostDir // the tree ModulesTree found
	}
	// The target first: a missing target is the error to report, not the
	// default store missing on a host without Nix.
	doc, err := bootjson.LoadStore(c.Target, c.StoreDir)
	if err != nil {
		return nil, err
	}
	if err := c.checkStore(); err != nil {
		return nil, err
	}
	spec, err := doc.Select(c.Specialisation)
	if err != nil {
		return nil, err
	}
	paths, err := spec.Locate(doc.Path, c.StoreDir)
	if err != nil {
		return nil, err
	}
	if vm.Arch, err = vmm.ArchOfSystem(spec.System); err != nil {
		return nil, fmt.Errorf("%s: %w", doc.Path, err)
	}
	systemKernel := paths.Kernel
	kernelWhat := doc.Path + ": org.nixos.bootspec.v1.kernel"
	vm.Kernel, vm.Initrd = paths.Kernel, paths.Initrd
	if c.Kernel != "" {
		vm.Kernel, kernelWhat = abs(c.Kernel), "--kernel"
	}
	if c.Initrd != "" {
		vm.Initrd = abs(c.Initrd)
	}
	vm.BootParams = append([]string{"init=" + spec.Init}, spec.KernelParams...)
	backend, err := vmm.Lookup(c.Backend)
	if err != nil {
		return nil, err
	}
	// A VM named by the user is one to reach with exec: give it the
	// agent's port where the backend has one.
	vm.Agent = c.Agent || c.Command != nil || (c.Name != "" && backend.Features().Agent)
	if err := vm.Validate(); err != nil {
		return nil, err
	}
	if err := checkFeatures(vm, backend); err != nil {
		return nil, err
	}
	if err := checkKernelImage(kernelWhat, vm.Kernel, vm.Arch); err != nil {
		return nil, err
	}
	return &Plan{Config: c, VM: vm, Backend: backend, Toplevel: spec.Toplevel, SystemKernel: systemKernel}, nil
}

// checkStore checks --store, or the default store: that one is looked at
// only once a target is known to need it (a host without Nix has none).
func (c *Config) checkStore() error {
	if c.StoreDir == DefaultStoreDir {
		if _, err := os.Stat(c.StoreDir); err != nil {
			return fmt.Errorf("the store %s: %w (boot.json names store paths: is Nix installed here? A store kept elsewhere is given with --store DIR)", c.StoreDir, unwrapPath(err))
		}
	}
	return checkDir("--store", c.StoreDir)
}

// CheckHost checks the files and host resources the flags name; the
// store one the user gave, not the default one (checkStore).
func (c *Config) CheckHost() error {
	if c.StoreDir != DefaultStoreDir {
		if err := checkDir("--store", c.StoreDir); err != nil {
			return err
		}
	}
	if c.ModulesDir != "" {
		if err := checkDir("--modules", c.ModulesDir); err != nil {
			return err
		}
	}
	for _, f := range []struct{ flag, path string }{{"--kernel", c.Kernel}, {"--initrd", c.Initrd}} {
		if f.path != "" {
			if err := checkFile(f.flag, f.path); err != nil {
				return err
			}
		}
	}
	for _, s := range c.Shares {
		if err := checkDir("--share", s.HostDir); err != nil {
			return err
		}
	}
	for _, d := range c.Disks {
		if err := checkFile("--disk", d.Path); err != nil {
			return fmt.Errorf("%w (block devices are not supported)", err)
		}
	}
	if c.Workdir != "" {
		if err := checkDir("--cwd", c.Workdir); err != nil {
			return err
		}
	}
	if c.State != "" {
		st, err := os.Stat(c.State)
		switch {
		case err == nil && !st.Mode().IsRegular():
			return fmt.Errorf("--state %s: not a regular file (a disk image sonix-run creates on first use)", c.State)
		case err == nil:
			// The guest writes its state there: a read-only file (or file
			// system) is found now, not by QEMU once everything started.
			if err := syscall.Access(c.State, unix.W_OK); err != nil {
				return fmt.Errorf("--state %s: not writable: %v", c.State, err)
			}
		default:
			dir := filepath.Dir(c.State)
			if err := checkDir("--state", dir); err != nil {
				return fmt.Errorf("%w (the image's directory must exist)", err)
			}
			if err := syscall.Access(dir, unix.W_OK); err != nil {
				return fmt.Errorf("--state %s: cannot be created in %s: %v", c.State, dir, err)
			}
		}
	}
	if c.DumpPath != "" {
		if st, err := os.Stat(c.DumpPath); err == nil && st.IsDir() {
			return fmt.Errorf("--dump %s: is a directory; expected a file to write the vmcore to", c.DumpPath)
		}
		if err := checkDir("--dump", filepath.Dir(c.DumpPath)); err != nil {
			return fmt.Errorf("%w (the dump's directory must exist)", err)
		}
	}
	if c.ConsoleLog != "" {
		if st, err := os.Stat(c.ConsoleLog); err == nil && st.IsDir() {
			return fmt.Errorf("--console-log %s: is a directory; expected a file to append to", c.ConsoleLog)
		}
		if err := checkDir("--console-log", filepath.Dir(c.ConsoleLog)); err != nil {
			return fmt.Errorf("%w (the log's directory must exist)", err)
		}
	}
	if total := hostMemoryMiB(); total > 0 && c.MemoryMiB > total {
		return fmt.Errorf("--memory %dM: this host has only %dM", c.MemoryMiB, total)
	}
	if !c.DryRun {
		if err := checkPortsFree(c); err != nil {
			return err
		}
	}
	return nil
}

// checkPortsFree tells at once when a host port the VM would listen on is
// taken, instead of QEMU failing after everything else has started.
func checkPortsFree(c *Config) error {
	for _, f := range c.Forwards {
		if err := PortFree(f.Proto, f.HostPort); err != nil {
			return fmt.Errorf("--forward %s: %w", f, err)
		}
	}
	if c.GDBPort != 0 {
		if err := PortFree("tcp", c.GDBPort); err != nil {
			return fmt.Errorf("--gdb=%d: %w", c.GDBPort, err)
		}
	}
	return nil
}

// PortFree says whether the host port proto:port on 127.0.0.1 can be
// listened on now (for --forward, --gdb and `sonix-run forward`).
func PortFree(proto string, port int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if proto == "udp" {
		l, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("host port udp:%d is not free: %v", port, err)
		}
		return l.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("host port tcp:%d is not free: %v", port, err)
	}
	return l.Close()
}

// checkFeatures refuses what the backend cannot do, in one place for all backends.
func checkFeatures(vm *vmm.VM, b vmm.Backend) error {
	f := b.Features()
	refuse := func(what string) error {
		return fmt.Errorf("%s: the %s backend does not support it", what, b.Name())
	}
	switch {
	case vm.GDBPort != 0 && !f.GDB:
		return refuse("--gdb")
	case len(vm.Network.Forwards) > 0 && !f.Forwards:
		return refuse("--forward")
	case len(vm.Disks) > 0 && !f.Disks:
		if vm.Disks[0].Serial == StateSerial {
			return refuse("--state")
		}
		return refuse("--disk")
	case vm.Agent && !f.Agent:
		return refuse("running commands in the guest (--run, exec, the Go harness)")
	case len(vm.QEMUArgs) > 0 && !f.RawQEMUArgs:
		return refuse("--qemu-arg")
	case vm.Rosetta && !f.Rosetta:
		return refuse("--rosetta")
	case vm.Network.Mode == vmm.NetNone && !f.NetNone:
		return refuse("--net none")
	case vm.Network.Mode == vmm.NetRestricted && !f.NetRestricted:
		return refuse("--net restricted")
	case len(vm.Network.VLANs) > 0 && !f.VLAN:
		return refuse("--vlan")
	case vm.DumpPath != "" && !f.Dump:
		return refuse("--dump")
	}
	return nil
}

// checkDir reports a clear error unless path is an existing directory.
func checkDir(flag, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, unwrapPath(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s: not a directory", flag, path)
	}
	return nil
}

// checkFile reports a clear error unless path is an existing regular file.
func checkFile(flag, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", flag, path)
	}
	return nil
}

// unwrapPath drops the path a *PathError repeats.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// hostMemoryMiB is the host's RAM, 0 where it cannot be read.
func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}
