package launcher

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is one run as the user asked for it.
type Config struct {
	Target         string // boot.json, a toplevel holding one, or a link to either
	Specialisation string // "" boots the main system

	StoreDir   string // host directory holding the store paths boot.json names
	StoreTag   string
	ModulesDir string // a /lib/modules tree to share, "" for none
	ModulesTag string

	Kernel string // a kernel image to boot instead of boot.json's (e.g. arch/x86/boot/bzImage)
	Initrd string // an initrd to use instead of boot.json's

	Net      string   // NetUser (default) or NetNone
	Forwards []string // --forward tcp:HOSTPORT:GUESTPORT
	Disks    []string // --disk FILE[,format=raw|qcow2][,ro]
	Shares   []string // --share HOSTDIR:TAG[:ro]

	Append    []string // kernel parameters, after everything else
	QEMUArgs  []string // raw QEMU arguments, last
	GDBPort   int      // open the gdb stub on this localhost port (0: none)
	GDBWait   bool     // stop the CPUs until gdb attaches
	CPUs      int
	MemoryMiB int
	Accel     Accel
	Backend   string // "auto", "qemu", "vz"
	Rosetta   bool   // share Rosetta for Linux (vz on Apple silicon)

	Timeout     time.Duration // 0: none
	StopTimeout time.Duration // how long a guest may take to power off when asked

	// Command, when set, is run in the guest through its agent
	// (docs/harness.md); the run's result is then the command's status, the
	// console goes only to ConsoleLog (and Stderr with Verbose), and a Stdin
	// that is not a terminal is the command's stdin.
	Command string
	// Agent adds the agent's ports without running a command (the Go harness).
	Agent bool

	ConsoleLog string // also append the console to this file
	Verbose    bool   // helper processes' own messages to Stderr
	DryRun     bool   // print the commands, start nothing

	Stdin  *os.File // the console's input; a terminal is put in raw mode
	Stdout io.Writer
	Stderr io.Writer
	// Signals delivers the signals that ask sonix-run to stop: the first
	// presses the guest's power button, the second stops the VM at once.
	Signals <-chan os.Signal
}

// Defaults for the fields a user may leave unset.
const (
	DefaultStoreDir    = "/nix/store"
	DefaultStoreTag    = "store"
	DefaultModulesTag  = "modules"
	DefaultCPUs        = 2
	DefaultMemoryMiB   = 1024
	DefaultStopTimeout = 10 * time.Second
)

func (c *Config) setDefaults() {
	if c.StoreDir == "" {
		c.StoreDir = DefaultStoreDir
	}
	if c.StoreTag == "" {
		c.StoreTag = DefaultStoreTag
	}
	if c.ModulesTag == "" {
		c.ModulesTag = DefaultModulesTag
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.Net == "" {
		c.Net = NetUser
	}
	if c.Accel == "" {
		c.Accel = AccelAuto
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
}

// checkDir reports a clear error unless path is an existing directory.
func checkDir(flag, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s: not a directory", flag, path)
	}
	return nil
}

// ParseMemory reads a memory size such as 512M, 2G or 1536 (MiB) and
// returns MiB.
func ParseMemory(s string) (int, error) {
	num, unit := s, byte('M')
	if n := len(s); n > 0 && (s[n-1] < '0' || s[n-1] > '9') {
		num, unit = s[:n-1], s[n-1]
		if n > 1 && (unit == 'B' || unit == 'b') { // 512MB, 2GiB-style suffixes
			num, unit = strings.TrimSuffix(strings.TrimSuffix(s[:n-1], "i"), "I"), 0
			if m := len(num); m > 0 {
				num, unit = num[:m-1], num[m-1]
			}
		}
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("memory size %q: expected a positive number with an optional unit, such as 512M or 2G", s)
	}
	switch unit {
	case 'M', 'm':
		return int(v), nil
	case 'G', 'g':
		return int(v) * 1024, nil
	case 'T', 't':
		return int(v) * 1024 * 1024, nil
	}
	return 0, fmt.Errorf("memory size %q: unknown unit %q (use M or G)", s, string(unit))
}
