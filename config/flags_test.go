package config

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/vmm"
)

// Every Config field has a flag, or is listed as having none (noFlag): a
// new field without a way to say it on the command line fails here.
func TestFlagsCoverConfig(t *testing.T) {
	covered := map[string]bool{}
	for _, f := range Flags() {
		for _, field := range f.Fields {
			covered[strings.SplitN(field, ".", 2)[0]] = true
		}
	}
	var fields []string
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Anonymous { // vmm.Devices: each kind of device has its flag
			for j := range f.Type.NumField() {
				fields = append(fields, f.Type.Field(j).Name)
			}
			continue
		}
		fields = append(fields, f.Name)
	}
	for _, name := range fields {
		if !covered[name] && noFlag[name] == "" {
			t.Errorf("Config.%s has no flag (add it to the table in flags.go, or to noFlag with why)", name)
		}
		if covered[name] && noFlag[name] != "" && name != "Command" {
			t.Errorf("Config.%s has a flag and is listed in noFlag", name)
		}
	}
}

// parseArgs reads what Args writes, with the table, as the CLI does.
func parseArgs(t *testing.T, args []string) Config {
	t.Helper()
	var c Config
	byName := map[string]*Flag{}
	table := Flags()
	for n := range table {
		byName[table[n].Name] = &table[n]
	}
	for len(args) > 0 {
		a := args[0]
		args = args[1:]
		if !strings.HasPrefix(a, "--") || a == "--" {
			c.Target = a
			if len(args) > 0 && args[0] == "--" {
				if c.Command == nil {
					c.Command = &Command{}
				}
				c.Command.Argv = args[1:]
				args = nil
			}
			continue
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		f := byName[name]
		if f == nil {
			t.Fatalf("Args wrote %q, which is no flag", a)
		}
		switch {
		case hasValue:
		case f.Kind == "bool":
			value = "true"
		case f.NoValue != "":
			value = f.NoValue
		default:
			value, args = args[0], args[1:]
		}
		if err := f.Set(&c, value); err != nil {
			t.Fatalf("--%s %q: %v", name, value, err)
		}
	}
	return c
}

// Config.Args is the inverse of the CLI's parser: a Config with every
// field that a flag can say set to something other than its default
// comes back the same through its command line.
func TestFlagsRoundTrip(t *testing.T) {
	old, _ := os.Getwd()
	if err := os.Chdir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(old)
	wd, _ := os.Getwd()
	full := Config{
		Target:         "./result",
		Specialisation: "debug",
		StoreDir:       "/srv/store", StoreTag: "st", ModulesDir: "/srv/mods", ModulesTag: "mt",
		Kernel: "/k/bzImage", Initrd: "/k/initrd", KernelAsIs: true,
		Net:      vmm.NetRestricted,
		Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 2222, GuestPort: 22}, {Proto: "udp", HostPort: 5353, GuestPort: 53}},
		Devices: vmm.Devices{
			Disks:  []vmm.Disk{{Path: "/d/a b.img", Format: "raw"}, {Path: "/d/c.qcow2", Format: "qcow2", ReadOnly: true}},
			Shares: []vmm.Share{{HostDir: "/srv/a:b", Tag: "data", ReadOnly: true, Cache: vmm.CacheAuto}},
		},
		VLANs:  []vmm.VLAN{{LAN: "lan1", Addr: netip.MustParsePrefix("10.0.0.2/24")}, {LAN: "lan2"}},
		Append: []string{"quiet", "a=b c"}, QEMUArgs: []string{"-device", "x"},
		GDBPort: 4321, GDBWait: true,
		CPUs: 4, MemoryMiB: 3072, Accel: vmm.AccelTCG, Backend: "qemu", Rosetta: true,
		Timeout: 90 * time.Second, StopTimeout: 3 * time.Second,
		Workdir: wd, WorkdirReadOnly: true,
		State: "/s/vm.qcow2", StateSize: 3 << 30, Force: true, DumpPath: "/s/vmcore",
		Name:       "dev",
		Command:    &Command{Shell: "make check; echo 'done'", User: "alice"},
		ConsoleLog: "/s/console.log", Verbose: true, DryRun: true,
	}
	back := parseArgs(t, full.Args())
	if !reflect.DeepEqual(back, full) {
		t.Errorf("round trip through\n  %q\ngave %+v\nwant %+v", full.Args(), back, full)
	}
	// The words after --, and a target that looks like a flag.
	argv := Config{Target: "-odd", Command: &Command{Argv: []string{"printf", "%s", "--", "x"}}}
	if back := parseArgs(t, argv.Args()); !reflect.DeepEqual(back, argv) {
		t.Errorf("round trip of %q gave %+v", argv.Args(), back)
	}
	// Defaults are left out.
	if got := (Config{Target: "./result"}).WithDefaults().Args(); !reflect.DeepEqual(got, []string{"./result"}) {
		t.Errorf("defaults wrote %q", got)
	}
}

// Values a Config cannot hold apart from "unset" are refused as flags: 0
// would boot without the gdb stub, or with the default CPUs.
func TestFlagsRefuseZero(t *testing.T) {
	for _, tc := range []struct{ flag, value, want string }{
		{"gdb", "0", "--gdb=0: expected a TCP port, 1 to 65535"},
		{"cpus", "0", "--cpus 0: expected 1 to 255"},
		{"state-size", "512K", "--state-size 512K: expected at least 1M"},
		{"timeout", "0s", "--timeout 0s: expected a positive duration"},
		{"cwd", "x", "--cwd=x: expected --cwd, --cwd=rw or --cwd=ro"},
	} {
		var c Config
		var err error
		for _, f := range Flags() {
			if f.Name == tc.flag {
				err = f.Set(&c, tc.value)
			}
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("--%s %s: %v, want %q", tc.flag, tc.value, err, tc.want)
		}
	}
}

// A Config's problems name its fields; for a Config the CLI built from
// flags, FlagErrors names the flags. Every problem is reported.
func TestFlagErrors(t *testing.T) {
	c := Config{Target: "x", CPUs: 300, Timeout: -time.Second,
		Forwards: []vmm.Forward{{Proto: "sctp", HostPort: 1, GuestPort: 2}}}.WithDefaults()
	err := c.CheckValues()
	lib := err.Error()
	for _, want := range []string{"Timeout -1s: expected a positive duration", "CPUs 300: expected 1 to 255", "Network.Forwards[0] sctp:1:2: expected the protocol tcp or udp"} {
		if !strings.Contains(lib, want) {
			t.Errorf("library error %q lacks %q", lib, want)
		}
	}
	cli := FlagMessage(err)
	for _, want := range []string{"--timeout -1s: expected a positive duration", "--cpus 300: expected 1 to 255", "--forward sctp:1:2: expected the protocol tcp or udp"} {
		if !strings.Contains(cli, want) {
			t.Errorf("CLI error %q lacks %q", cli, want)
		}
	}
}
