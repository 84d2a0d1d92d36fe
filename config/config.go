// Package config is what a run is asked to do: the typed Config, the one
// table of the CLI's flags for it (and its inverse, Config.Args), and the
// checks that turn it, before anything starts, into a Plan: boot.json
// read and its files found, the VM described and validated, the files the
// flags name and the host's resources checked, the backend's features and
// a --kernel's configuration (the preflight) checked. Every error it
// returns is bad input: nothing was started.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

// Config is one run as the user asked for it: typed values, checked by
// Validate before anything starts.
type Config struct {
	Target         string // boot.json, a toplevel holding one, a link to either, or a Nix installable
	Specialisation string // "" boots the main system

	StoreDir   string // host directory holding the store paths boot.json names
	StoreTag   string
	ModulesDir string // a /lib/modules tree (or INSTALL_MOD_PATH root) to share, "" for none
	ModulesTag string

	Kernel string // a kernel image to boot instead of boot.json's (e.g. arch/x86/boot/bzImage)
	Initrd string // an initrd to use instead of boot.json's
	// KernelAsIs boots the kernel file as given, never its uncompressed
	// copy from the kernel cache (--kernel-format bzimage).
	KernelAsIs bool

	Net      string // vmm.NetUser (default), vmm.NetRestricted or vmm.NetNone
	Forwards []vmm.Forward
	// Devices are the shares and disks the user adds (--share, --disk;
	// the store, modules, --cwd and --state come on top).
	vmm.Devices
	// VLANs are virtual LANs shared with this user's other VMs (--vlan),
	// with the guest's address on each when it has one (the kernel
	// parameter sonix.ip=ADDR/PREFIX,MAC, MAC being its NIC's).
	VLANs []vmm.VLAN

	Append    []string // kernel parameters, after everything else
	QEMUArgs  []string // raw QEMU arguments, last
	GDBPort   int      // open the gdb stub on this localhost port (0: none)
	GDBWait   bool     // stop the CPUs until gdb attaches
	CPUs      int
	MemoryMiB int
	Accel     vmm.Accel
	Backend   string // "auto", "qemu", "vz"
	Rosetta   bool   // share Rosetta for Linux (vz on Apple silicon)

	Timeout     time.Duration // 0: none
	StopTimeout time.Duration // how long a guest may take to power off when asked

	// Workdir is shared into the guest at the same path (read-write unless
	// WorkdirReadOnly) and is where the command runs (--cwd).
	Workdir         string
	WorkdirReadOnly bool
	// State is a disk image that keeps the guest's state across runs
	// (--state): created on first use (StateSize, sparse; qcow2 for a
	// .qcow2 name), attached with the serial "sonix-state" and announced
	// by the kernel parameter sonix.state; the guest formats and mounts it.
	State     string
	StateSize int64
	// Force boots a --kernel that the preflight says will not boot.
	Force bool
	// DumpPath, when set, receives a memory dump (ELF vmcore) of a guest
	// that panics, before the VM is stopped (--dump).
	DumpPath string

	// Name names the running VM for `sonix-run exec/cp/shell/stop NAME`;
	// "" picks one from the system's name.
	Name string

	// Command, when set, is run in the guest through its agent
	// (docs/protocol.md); the run's result is then the command's status, the
	// console goes only to ConsoleLog (and Stderr with Verbose), and a Stdin
	// that is not a terminal is the command's stdin.
	Command *Command
	// Agent gives the guest the agent's port without running a command
	// (the Go harness, and `sonix-run exec` into a VM started without one).
	Agent bool

	ConsoleLog string // also append the console to this file
	Verbose    bool   // helper processes' own messages to Stderr
	DryRun     bool   // print the commands, start nothing

	Stdin *os.File // the console's input; a terminal is put in raw mode
	// Stdout and Stderr get the guest's output and sonix-run's messages.
	// sonix-run writes each from one goroutine at a time.
	Stdout io.Writer
	Stderr io.Writer
	// Signals delivers the signals that ask sonix-run to stop: before the VM
	// runs, the first ends the run at once; then the first presses the
	// guest's power button and the second stops the VM.
	Signals <-chan os.Signal
}

// Command is a command to run in the guest.
type Command struct {
	Shell string   // run with sh -c, or
	Argv  []string // run directly (looked up on the guest's PATH)
	User  string   // "" for root
	Dir   string   // "" for /
	TTY   bool     // a pseudo-terminal (sonix-run shell, exec -t)
}

// Defaults for the fields a user may leave unset.
const (
	DefaultStoreDir    = "/nix/store"
	DefaultStoreTag    = "store"
	DefaultModulesTag  = "modules"
	DefaultCPUs        = 2
	DefaultMemoryMiB   = 1024
	DefaultStopTimeout = 10 * time.Second
	DefaultStateSize   = 8 << 30
)

// WithDefaults returns c with every unset field given its default.
func (c Config) WithDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.StoreDir, DefaultStoreDir)
	set(&c.StoreTag, DefaultStoreTag)
	set(&c.ModulesTag, DefaultModulesTag)
	set(&c.Net, vmm.NetUser)
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.Accel == "" {
		c.Accel = vmm.AccelAuto
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.StateSize == 0 {
		c.StateSize = DefaultStateSize
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	return c
}

// CheckValues checks what needs no file system and is not the VM's to
// check (vmm.VM.Validate checks that), and reports every problem
// (errors.Join of *vmm.Problem naming Config fields; FlagErrors names
// their flags).
func (c *Config) CheckValues() error {
	var errs []error
	bad := func(field, value, want string, args ...any) {
		errs = append(errs, &vmm.Problem{Field: field, Value: value, Want: fmt.Sprintf(want, args...)})
	}
	if c.Target == "" {
		errs = append(errs, errors.New("no system to boot: give a boot.json or a NixOS toplevel (e.g. ./result)"))
	}
	if c.Timeout < 0 {
		bad("Timeout", c.Timeout.String(), "expected a positive duration such as 90s or 5m")
	}
	if c.StopTimeout < 0 {
		bad("StopTimeout", c.StopTimeout.String(), "expected a positive duration such as 10s")
	}
	if c.Command != nil && c.Command.Shell == "" && len(c.Command.Argv) == 0 {
		bad("Command", "", "empty command")
	}
	if c.StateSize < 1<<20 {
		bad("StateSize", strconv.FormatInt(c.StateSize, 10), "expected at least 1M")
	}
	if c.Workdir != "" && !filepath.IsAbs(c.Workdir) {
		bad("Workdir", c.Workdir, "expected an absolute path")
	}
	if _, err := vmm.ParseAccel(string(c.Accel)); err != nil {
		bad("Accel", strconv.Quote(string(c.Accel)), "expected auto, kvm or tcg")
	}
	if c.Name != "" {
		if err := rundir.CheckName(c.Name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, tag := range []struct{ field, v string }{{"StoreTag", c.StoreTag}, {"ModulesTag", c.ModulesTag}} {
		if err := vmm.CheckTag(tag.v); err != nil {
			bad(tag.field, strconv.Quote(tag.v), "%v", err)
		}
	}
	// The VM as the Config describes it, boot.json apart: every rule of
	// vmm.VM.Validate, checked once, there.
	vm := c.describe()
	vm.Kernel = "(boot.json's)"
	for _, p := range vmm.Problems(vm.Validate()) {
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}
