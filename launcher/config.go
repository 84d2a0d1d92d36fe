package launcher

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/vlan"
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
	Disks    []vmm.Disk
	Shares   []vmm.Share
	// VLANs are virtual LANs shared with this user's other VMs (--vlan):
	// "NAME", or "NAME=ADDR/PREFIX" to give the guest that address on it
	// (the kernel parameter sonix.ip=ADDR/PREFIX,MAC, MAC being its NIC's).
	VLANs []string

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
	// (docs/harness.md); the run's result is then the command's status, the
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

// withDefaults returns c with every unset field given its default.
func (c Config) withDefaults() Config {
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

// checkFlags checks what needs no file system: the values themselves.
func (c *Config) checkFlags() error {
	switch {
	case c.Target == "":
		return fmt.Errorf("no system to boot: give a boot.json or a NixOS toplevel (e.g. ./result)")
	case c.CPUs < 1 || c.CPUs > vmm.MaxCPUs:
		return fmt.Errorf("--cpus %d: expected 1 to %d", c.CPUs, vmm.MaxCPUs)
	case c.Timeout < 0:
		return fmt.Errorf("--timeout %v: expected a positive duration such as 90s or 5m", c.Timeout)
	case c.StopTimeout < 0:
		return fmt.Errorf("--stop-timeout %v: expected a positive duration such as 10s", c.StopTimeout)
	case c.GDBPort < 0 || c.GDBPort > 65535:
		return fmt.Errorf("--gdb=%d: expected a TCP port, 1 to 65535", c.GDBPort)
	case c.Command != nil && c.Command.Shell == "" && len(c.Command.Argv) == 0:
		return fmt.Errorf("--run: empty command")
	case c.StateSize < 1<<20:
		return fmt.Errorf("--state-size %d: expected at least 1M", c.StateSize)
	case c.Workdir != "" && !filepath.IsAbs(c.Workdir):
		return fmt.Errorf("--cwd %s: expected an absolute path", c.Workdir)
	}
	if _, err := vmm.ParseNet(c.Net); err != nil {
		return err
	}
	if _, err := vmm.ParseAccel(string(c.Accel)); err != nil {
		return err
	}
	for _, tag := range []struct{ flag, v string }{{"--store-tag", c.StoreTag}, {"--modules-tag", c.ModulesTag}} {
		if err := vmm.CheckTag(tag.v); err != nil {
			return fmt.Errorf("%s: %w", tag.flag, err)
		}
	}
	if c.Name != "" {
		if err := CheckName(c.Name); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, v := range c.VLANs {
		lan, _, err := parseVLAN(v)
		if err != nil {
			return err
		}
		if seen[lan] {
			return fmt.Errorf("--vlan %s is given twice", lan)
		}
		seen[lan] = true
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CheckName checks a VM name (--name): 1 to 63 letters, digits, '.', '_'
// or '-', starting with a letter or digit.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return &Error{Reason: BadInput, Err: fmt.Errorf("VM name %q: expected 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)}
	}
	return nil
}

// parseVLAN reads NAME or NAME=ADDR/PREFIX (--vlan).
func parseVLAN(s string) (lan, addr string, err error) {
	lan, addr, hasAddr := strings.Cut(s, "=")
	if err := vlan.CheckName(lan); err != nil {
		return "", "", fmt.Errorf("--vlan %q: %w", s, err)
	}
	if hasAddr {
		if _, err := netip.ParsePrefix(addr); err != nil {
			return "", "", fmt.Errorf("--vlan %q: expected NAME or NAME=ADDR/PREFIX such as lan1=10.0.0.1/24: %v", s, err)
		}
	}
	return lan, addr, nil
}
