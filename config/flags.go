package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/vmm"
)

// Flag is one of sonix-run's boot flags and the Config field it sets: the
// one table the CLI registers its flags from and Config.Args writes a
// Config back with, so that a run's command line (a harness reproduce
// line, a message) boots what the Config describes. A new Config field
// gets its entry here (TestFlagsCoverConfig fails until it has one, or is
// listed as having none).
type Flag struct {
	Name  string // without dashes
	Short string // one letter, or ""
	// Fields are the Config fields the flag sets (Problem.Field names), so
	// that errors about them can name the flag.
	Fields []string
	Usage  string // for --help; `VALUE` in backquotes names the value
	// Kind is "bool" for a flag without a value, else what its value is
	// (shown in --help).
	Kind string
	// NoValue is the value the flag takes when given without one
	// (--gdb, --cwd); "" when it needs one.
	NoValue string
	// Repeat: the flag may be given several times, each value added.
	Repeat bool
	set    func(c *Config, v string) error
	// get is what to write for c: nil for the default.
	get func(c *Config) []string
}

// Set sets the flag's field in c from v, checking v.
func (f *Flag) Set(c *Config, v string) error { return f.set(c, v) }

// Value is the flag's value in c as it would be typed, "" for the
// default (for a repeatable flag: its values, joined with commas).
func (f *Flag) Value(c *Config) string { return strings.Join(f.get(c), ",") }

// Flags is the table of boot flags, in --help's order.
func Flags() []Flag { return flags }

// FlagFor returns the flag that sets a Config (or VM) field such as
// "Forwards[2]" or "Network.Forwards[0]"; nil when none does.
func FlagFor(field string) *Flag {
	field = strings.TrimPrefix(field, "Network.")
	if i := strings.IndexAny(field, "[."); i >= 0 {
		field = field[:i]
	}
	for n := range flags {
		for _, f := range flags[n].Fields {
			if f == field {
				return &flags[n]
			}
		}
	}
	return nil
}

// FlagMessage is err's message as a user of the CLI should read it: each
// problem (vmm.Problem, alone, joined or wrapped) names the flag its value
// came from, on a line of its own; other errors as they are. For a Config
// that the CLI built from flags.
func FlagMessage(err error) string {
	if len(vmm.Problems(err)) == 0 {
		return err.Error()
	}
	return strings.Join(flagLines(err), "\n")
}

func flagLines(err error) []string {
	switch e := err.(type) {
	case *vmm.Problem:
		if f := FlagFor(e.Field); f != nil && e.Flag == "" {
			name := "--" + f.Name
			if f.NoValue != "" && e.Value != "" {
				name += "=" // --gdb=0, --cwd=x: the value is optional
			}
			e = e.At("", name)
		}
		return []string{e.Error()}
	case interface{ Unwrap() []error }:
		var out []string
		for _, x := range e.Unwrap() {
			out = append(out, flagLines(x)...)
		}
		return out
	}
	if u, ok := err.(interface{ Unwrap() error }); ok && len(vmm.Problems(err)) > 0 {
		return flagLines(u.Unwrap())
	}
	return []string{err.Error()}
}

// Args is the command line, less the program's name, that boots what c
// describes: every flag whose field is not its default, the target, and
// the command (--run, or after --). I/O fields, Signals and Agent have no
// flag (see noFlag). A Workdir is the current directory of the one who
// runs it (--cwd): run the line there.
func (c Config) Args() []string {
	var args []string
	for n := range flags {
		f := &flags[n]
		for _, v := range f.get(&c) {
			switch {
			case f.Kind == "bool":
				args = append(args, "--"+f.Name)
			case f.NoValue != "" && v == f.NoValue:
				args = append(args, "--"+f.Name)
			case f.NoValue != "":
				args = append(args, "--"+f.Name+"="+v)
			default:
				args = append(args, "--"+f.Name, v)
			}
		}
	}
	if c.Command != nil && c.Command.Shell == "" && len(c.Command.Argv) > 0 {
		return append(append(args, c.Target, "--"), c.Command.Argv...)
	}
	if strings.HasPrefix(c.Target, "-") {
		args = append(args, "--")
	}
	return append(args, c.Target)
}

// noFlag lists the Config fields that no flag sets, and why.
var noFlag = map[string]string{
	"Target":  "the positional TARGET",
	"Command": "--run, or the words after --; its User is --user",
	"Agent":   "the harness's: a VM named with --name gets the agent's port",
	"Stdin":   "the process's own", "Stdout": "the process's own", "Stderr": "the process's own",
	"Signals": "the process's own",
}

// access sets a flag's field from a value, and gets the values to write
// for a Config (nil for the default).
type access struct {
	set func(*Config, string) error
	get func(*Config) []string
}

func str(field func(*Config) *string, def string) access {
	return access{
		set: func(c *Config, v string) error { *field(c) = v; return nil },
		get: func(c *Config) []string {
			if v := *field(c); v != "" && v != def {
				return []string{v}
			}
			return nil
		},
	}
}

func boolean(field func(*Config) *bool) access {
	return access{
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			*field(c) = b
			return err
		},
		get: func(c *Config) []string {
			if *field(c) {
				return []string{"true"}
			}
			return nil
		},
	}
}

func duration(field func(*Config) *time.Duration, flag string, def time.Duration) access {
	return access{
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return &vmm.Problem{Flag: "--" + flag, Value: v, Want: "expected a positive duration such as 90s or 5m"}
			}
			*field(c) = d
			return nil
		},
		get: func(c *Config) []string {
			if d := *field(c); d != 0 && d != def {
				return []string{d.String()}
			}
			return nil
		},
	}
}

// list is a repeatable flag of values that parse reads and String writes.
func list[T fmt.Stringer](field func(*Config) *[]T, parse func(string) (T, error)) access {
	return access{
		set: func(c *Config, v string) error {
			x, err := parse(v)
			if err != nil {
				return err
			}
			*field(c) = append(*field(c), x)
			return nil
		},
		get: func(c *Config) []string {
			var out []string
			for _, x := range *field(c) {
				out = append(out, x.String())
			}
			return out
		},
	}
}

func stringList(field func(*Config) *[]string) access {
	return access{
		set: func(c *Config, v string) error { *field(c) = append(*field(c), v); return nil },
		get: func(c *Config) []string { return *field(c) },
	}
}

// number is an int flag whose values lo to hi are accepted; 0 and def are
// its default (not written).
func number(field func(*Config) *int, flag string, lo, hi, def int, want string) access {
	return access{
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				return &vmm.Problem{Flag: flag, Value: v, Want: want}
			}
			*field(c) = n
			return nil
		},
		get: func(c *Config) []string {
			if n := *field(c); n != 0 && n != def {
				return []string{strconv.Itoa(n)}
			}
			return nil
		},
	}
}

func entry(name, short string, fields []string, kind, usage string, a access) Flag {
	return Flag{Name: name, Short: short, Fields: fields, Kind: kind, Usage: usage, set: a.set, get: a.get}
}

func withNoValue(f Flag, v string) Flag { f.NoValue = v; return f }
func repeated(f Flag) Flag              { f.Repeat = true; return f }

var flags = []Flag{
	entry("run", "", []string{"Command"}, "COMMAND", "run `COMMAND` (sh -c) in the guest, then power off; exit with its status", access{
		set: func(c *Config, v string) error {
			if v == "" {
				return &vmm.Problem{Flag: "--run", Want: "empty command"}
			}
			if c.Command == nil {
				c.Command = &Command{}
			}
			c.Command.Shell = v
			return nil
		},
		get: func(c *Config) []string {
			if c.Command != nil && c.Command.Shell != "" {
				return []string{c.Command.Shell}
			}
			return nil
		},
	}),
	entry("user", "u", []string{"Command.User"}, "USER", "run the command as `USER` (a name or uid[:gid]) instead of root", access{
		set: func(c *Config, v string) error {
			if c.Command == nil {
				c.Command = &Command{}
			}
			c.Command.User = v
			return nil
		},
		get: func(c *Config) []string {
			if c.Command != nil && c.Command.User != "" {
				return []string{c.Command.User}
			}
			return nil
		},
	}),
	withNoValue(entry("cwd", "", []string{"Workdir", "WorkdirReadOnly"}, "rw|ro", "share the current directory at the same path in the guest and run the command there (`rw` or ro)", access{
		set: func(c *Config, v string) error {
			if v != "rw" && v != "ro" {
				return &vmm.Problem{Flag: "--cwd=", Value: v, Want: "expected --cwd, --cwd=rw or --cwd=ro"}
			}
			dir, err := os.Getwd()
			if err != nil {
				return &vmm.Problem{Flag: "--cwd", Want: err.Error()}
			}
			c.Workdir, c.WorkdirReadOnly = dir, v == "ro"
			return nil
		},
		get: func(c *Config) []string {
			switch {
			case c.Workdir == "":
				return nil
			case c.WorkdirReadOnly:
				return []string{"ro"}
			}
			return []string{"rw"}
		},
	}), "rw"),
	entry("memory", "", []string{"MemoryMiB"}, "SIZE", "guest memory, e.g. 512M or 2G (default 1024M)", access{
		set: func(c *Config, v string) (err error) { c.MemoryMiB, err = vmm.ParseMemory(v); return err },
		get: func(c *Config) []string {
			if c.MemoryMiB != 0 && c.MemoryMiB != DefaultMemoryMiB {
				return []string{strconv.Itoa(c.MemoryMiB) + "M"}
			}
			return nil
		},
	}),
	entry("cpus", "", []string{"CPUs"}, "N", "virtual CPUs (default 2)",
		number(func(c *Config) *int { return &c.CPUs }, "--cpus", 1, vmm.MaxCPUs, DefaultCPUs, fmt.Sprintf("expected 1 to %d", vmm.MaxCPUs))),
	entry("accel", "", []string{"Accel"}, "auto|kvm|tcg", "auto, kvm or tcg; auto uses KVM where it really runs a guest", access{
		set: func(c *Config, v string) (err error) { c.Accel, err = vmm.ParseAccel(v); return err },
		get: func(c *Config) []string {
			if c.Accel != "" && c.Accel != vmm.AccelAuto {
				return []string{string(c.Accel)}
			}
			return nil
		},
	}),
	entry("backend", "", []string{"Backend"}, "auto|qemu|vz", "auto, qemu or vz; auto is vz on macOS, qemu elsewhere",
		str(func(c *Config) *string { return &c.Backend }, "auto")),
	entry("rosetta", "", []string{"Rosetta"}, "bool", "share Rosetta for Linux under the tag rosetta (vz on Apple silicon)",
		boolean(func(c *Config) *bool { return &c.Rosetta })),
	entry("name", "", []string{"Name"}, "NAME", "name the VM for exec, shell, cp and stop (default: the system's name)",
		str(func(c *Config) *string { return &c.Name }, "")),
	entry("store", "", []string{"StoreDir"}, "DIR", "host `DIR` holding the store paths boot.json names (default /nix/store)",
		str(func(c *Config) *string { return &c.StoreDir }, DefaultStoreDir)),
	entry("modules", "", []string{"ModulesDir"}, "DIR", "share a /lib/modules `DIR`, or an INSTALL_MOD_PATH root holding lib/modules",
		str(func(c *Config) *string { return &c.ModulesDir }, "")),
	entry("store-tag", "", []string{"StoreTag"}, "TAG", "virtiofs `TAG` of the store share (default store)",
		str(func(c *Config) *string { return &c.StoreTag }, DefaultStoreTag)),
	entry("modules-tag", "", []string{"ModulesTag"}, "TAG", "virtiofs `TAG` of the modules share (default modules)",
		str(func(c *Config) *string { return &c.ModulesTag }, DefaultModulesTag)),
	entry("kernel", "", []string{"Kernel"}, "IMAGE", "boot this kernel `IMAGE` (bzImage, Image) instead of boot.json's",
		str(func(c *Config) *string { return &c.Kernel }, "")),
	entry("initrd", "", []string{"Initrd"}, "INITRD", "use this `INITRD` instead of boot.json's",
		str(func(c *Config) *string { return &c.Initrd }, "")),
	entry("force", "", []string{"Force"}, "bool", "boot a --kernel even when its configuration says it cannot boot this system",
		boolean(func(c *Config) *bool { return &c.Force })),
	entry("kernel-format", "", []string{"KernelAsIs"}, "auto|bzimage", "auto boots an x86_64 bzImage's vmlinux (kept in the kernel cache) through its PVH entry, about twice as fast under TCG; bzimage boots the kernel file as given", access{
		set: func(c *Config, v string) error {
			if v != "auto" && v != "bzimage" {
				return &vmm.Problem{Flag: "--kernel-format", Value: strconv.Quote(v), Want: "expected auto or bzimage"}
			}
			c.KernelAsIs = v == "bzimage"
			return nil
		},
		get: func(c *Config) []string {
			if c.KernelAsIs {
				return []string{"bzimage"}
			}
			return nil
		},
	}),
	repeated(entry("append", "", []string{"Append"}, "ARG", "add `ARG` to the kernel command line, last (repeatable; also $SONIX_APPEND)",
		stringList(func(c *Config) *[]string { return &c.Append }))),
	entry("net", "", []string{"Net"}, "user|restricted|none", "guest network: user (NAT, no privileges), restricted (NAT without any way out: only forwarded ports reach the guest) or none", access{
		set: func(c *Config, v string) (err error) { c.Net, err = vmm.ParseNet(v); return err },
		get: func(c *Config) []string {
			if c.Net != "" && c.Net != vmm.NetUser {
				return []string{c.Net}
			}
			return nil
		},
	}),
	repeated(entry("forward", "", []string{"Forwards"}, "tcp:HOSTPORT:GUESTPORT", "forward host 127.0.0.1:HOSTPORT to the guest (repeatable; also udp:)",
		list(func(c *Config) *[]vmm.Forward { return &c.Forwards }, vmm.ParseForward))),
	repeated(entry("disk", "", []string{"Disks"}, "FILE[,format=raw|qcow2][,ro]", "attach an image as a virtio disk (repeatable)",
		list(func(c *Config) *[]vmm.Disk { return &c.Disks }, vmm.ParseDisk))),
	repeated(entry("vlan", "", []string{"VLANs"}, "NAME[=ADDR/PREFIX]", "a NIC on the virtual LAN `NAME[=ADDR/PREFIX]`, shared with your other VMs on it, with that address (repeatable)",
		list(func(c *Config) *[]vmm.VLAN { return &c.VLANs }, vmm.ParseVLAN))),
	repeated(entry("share", "", []string{"Shares"}, "HOSTDIR:TAG[:ro]", "share a host directory over virtio-fs (repeatable; :ro is enforced on the host)",
		list(func(c *Config) *[]vmm.Share { return &c.Shares }, vmm.ParseShare))),
	repeated(entry("qemu-arg", "", []string{"QEMUArgs"}, "ARG", "add `ARG` to QEMU's command line, last (repeatable)",
		stringList(func(c *Config) *[]string { return &c.QEMUArgs }))),
	withNoValue(entry("gdb", "", []string{"GDBPort"}, "PORT", "open QEMU's gdb stub on localhost `PORT` (default 1234) and boot with nokaslr",
		number(func(c *Config) *int { return &c.GDBPort }, "--gdb=", 1, 65535, 0, "expected a TCP port, 1 to 65535")), "1234"),
	entry("gdb-wait", "", []string{"GDBWait"}, "bool", "with --gdb: stop the CPUs until gdb attaches and continues",
		boolean(func(c *Config) *bool { return &c.GDBWait })),
	entry("specialisation", "", []string{"Specialisation"}, "NAME", "boot the specialisation `NAME`",
		str(func(c *Config) *string { return &c.Specialisation }, "")),
	entry("timeout", "", []string{"Timeout"}, "DURATION", "stop the VM after `DURATION` (e.g. 90s, 5m) and exit 124",
		duration(func(c *Config) *time.Duration { return &c.Timeout }, "timeout", 0)),
	entry("stop-timeout", "", []string{"StopTimeout"}, "DURATION", "on SIGINT/SIGTERM, how long the guest may take to power off (default 10s)",
		duration(func(c *Config) *time.Duration { return &c.StopTimeout }, "stop-timeout", DefaultStopTimeout)),
	entry("console-log", "", []string{"ConsoleLog"}, "FILE", "also append the console to `FILE`",
		str(func(c *Config) *string { return &c.ConsoleLog }, "")),
	entry("state", "", []string{"State"}, "FILE", "keep the guest's state (/var, /home) on the disk image `FILE`, created on first use",
		str(func(c *Config) *string { return &c.State }, "")),
	entry("state-size", "", []string{"StateSize"}, "SIZE", "the size of a --state image created on first use (default 8G)", access{
		set: func(c *Config, v string) error {
			n, err := vmm.ParseSize("--state-size", v)
			if err == nil && n < 1<<20 {
				err = &vmm.Problem{Flag: "--state-size", Value: v, Want: "expected at least 1M"}
			}
			c.StateSize = n
			return err
		},
		get: func(c *Config) []string {
			if c.StateSize != 0 && c.StateSize != DefaultStateSize {
				return []string{sizeString(c.StateSize)}
			}
			return nil
		},
	}),
	entry("dump", "", []string{"DumpPath"}, "FILE", "when the guest panics, write its memory (an ELF vmcore) to `FILE`",
		str(func(c *Config) *string { return &c.DumpPath }, "")),
	entry("verbose", "v", []string{"Verbose"}, "bool", "show QEMU's and virtiofsd's own messages, and the VM's name",
		boolean(func(c *Config) *bool { return &c.Verbose })),
	entry("dry-run", "n", []string{"DryRun"}, "bool", "print the commands a run executes, as a shell script, and start nothing",
		boolean(func(c *Config) *bool { return &c.DryRun })),
}

// sizeString writes a size in bytes as vmm.ParseSize reads it, exactly.
func sizeString(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.unit
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
