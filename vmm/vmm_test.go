package vmm

import (
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int
		bad  bool
	}{
		{"512M", 512, false}, {"512", 512, false}, {"2G", 2048, false}, {"2g", 2048, false},
		{"1536m", 1536, false}, {"4GiB", 4096, false}, {"512MB", 512, false}, {"1T", 1024 * 1024, false},
		{"", 0, true}, {"0", 0, true}, {"-1G", 0, true}, {"lots", 0, true}, {"2X", 0, true}, {"1.5G", 0, true},
		{"32M", 0, true}, {"64T", 0, true}, {"100K", 0, true}, {"99999999999999999999G", 0, true}, {"9223372036854775807T", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMemory(tt.in)
		if tt.bad != (err != nil) || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v", tt.in, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), "--memory") {
			t.Errorf("ParseMemory(%q): %v does not name the flag", tt.in, err)
		}
	}
}

func TestCommandLineOrder(t *testing.T) {
	vm := &VM{BootParams: []string{"init=/nix/store/x/init", "loglevel=4"}, UserParams: []string{"quiet", "a=b c"}}
	got := vm.CommandLine("console=ttyS0", "panic=-1")
	want := "init=/nix/store/x/init loglevel=4 console=ttyS0 panic=-1 quiet a=b c"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	ok := VM{Kernel: "k", CPUs: 1, MemoryMiB: 512, Devices: Devices{Shares: []Share{{Tag: "store", HostDir: "/s", Cache: CacheAlways}, {Tag: "modules", HostDir: "/m", Cache: CacheAuto}}},
		Network: Network{Mode: NetUser, Forwards: []Forward{{"tcp", 2222, 22}, {"udp", 2222, 53}}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := map[string]func(*VM){
		"no kernel":          func(vm *VM) { vm.Kernel = "" },
		"no cpus":            func(vm *VM) { vm.CPUs = 0 },
		"too many cpus":      func(vm *VM) { vm.CPUs = 100000 },
		"tiny memory":        func(vm *VM) { vm.MemoryMiB = 16 },
		"huge memory":        func(vm *VM) { vm.MemoryMiB = 64 << 20 },
		"long tag":           func(vm *VM) { vm.Shares[0].Tag = strings.Repeat("t", 37) },
		"empty tag":          func(vm *VM) { vm.Shares[0].Tag = "" },
		"tag with a comma":   func(vm *VM) { vm.Shares[0].Tag = "a,b" },
		"duplicate tags":     func(vm *VM) { vm.Shares[1].Tag = "store" },
		"gdb port too big":   func(vm *VM) { vm.GDBPort = 70000 },
		"gdb-wait alone":     func(vm *VM) { vm.GDBWait = true },
		"same forward twice": func(vm *VM) { vm.Network.Forwards = append(vm.Network.Forwards, Forward{"tcp", 2222, 80}) },
		"forward on the gdb port": func(vm *VM) {
			vm.GDBPort = 2222
		},
		"forward without user net": func(vm *VM) { vm.Network.Mode = NetNone },
		"forward of sctp":          func(vm *VM) { vm.Network.Forwards[0].Proto = "sctp" },
		"forward to port 0":        func(vm *VM) { vm.Network.Forwards[0].GuestPort = 0 },
		"disk of format vmdk":      func(vm *VM) { vm.Disks = []Disk{{Path: "/d", Format: "vmdk"}} },
		"disk without a file":      func(vm *VM) { vm.Disks = []Disk{{Format: "raw"}} },
		"share without a cache":    func(vm *VM) { vm.Shares[1].Cache = "" },
		"net of tap":               func(vm *VM) { vm.Network.Mode = "tap" },
		"lan with a slash":         func(vm *VM) { vm.Network.VLANs = []VLANPort{{VLAN: VLAN{LAN: "a/b"}}} },
		"same lan twice": func(vm *VM) {
			vm.Network.VLANs = []VLANPort{{VLAN: VLAN{LAN: "a"}}, {VLAN: VLAN{LAN: "a"}}}
		},
	}
	for name, change := range tests {
		vm := ok
		vm.Shares = append([]Share(nil), ok.Shares...)
		vm.Network.Forwards = append([]Forward(nil), ok.Network.Forwards...)
		change(&vm)
		err := vm.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if ps := Problems(err); len(ps) == 0 || ps[0].Field == "" {
			t.Errorf("%s: %v: no problem naming its field", name, err)
		}
	}
	// Every problem is reported, each naming its field.
	vm := ok
	vm.CPUs, vm.MemoryMiB = 0, 1
	vm.Network.Forwards = []Forward{{"sctp", 1, 2}}
	ps := Problems(vm.Validate())
	var fields []string
	for _, p := range ps {
		fields = append(fields, p.Field)
	}
	if got := strings.Join(fields, " "); got != "CPUs MemoryMiB Network.Forwards[0]" {
		t.Errorf("problems in %q, want CPUs, MemoryMiB and the forward: %v", got, ps)
	}
	if ps[0].Error() != "CPUs 0: expected 1 to 255" {
		t.Errorf("a library error names its field: %q", ps[0].Error())
	}
	if p := ps[0].At("", "--cpus"); p.Error() != "--cpus 0: expected 1 to 255" {
		t.Errorf("a flag's error names the flag: %q", p.Error())
	}
}

func TestParseShare(t *testing.T) {
	tests := []struct {
		in   string
		want Share
		bad  bool
	}{
		{in: "/a:tag", want: Share{HostDir: "/a", Tag: "tag", Cache: CacheAuto}},
		{in: "/a:tag:ro", want: Share{HostDir: "/a", Tag: "tag", ReadOnly: true, Cache: CacheAuto}},
		{in: "/a:b/c,d:tag", want: Share{HostDir: "/a:b/c,d", Tag: "tag", Cache: CacheAuto}},
		{in: "dir with space:t:ro", want: Share{HostDir: "dir with space", Tag: "t", ReadOnly: true, Cache: CacheAuto}},
		{in: "/a", bad: true}, {in: ":tag", bad: true}, {in: "/a:", bad: true}, {in: "/a:ro", bad: true},
		{in: "/a:" + strings.Repeat("x", 37), bad: true}, {in: "/a:t t", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseShare(tt.in)
		if tt.bad != (err != nil) || (!tt.bad && got != tt.want) {
			t.Errorf("ParseShare(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestParseForwardAndDisk(t *testing.T) {
	for _, bad := range []string{"", "tcp", "tcp:1", "tcp:0:22", "tcp:65536:22", "sctp:1:2", "tcp:a:b", "tcp:1:2:3", "tcp:-1:2"} {
		if _, err := ParseForward(bad); err == nil || !strings.Contains(err.Error(), "--forward") {
			t.Errorf("ParseForward(%q): %v", bad, err)
		}
	}
	if f, err := ParseForward("udp:5353:53"); err != nil || f != (Forward{"udp", 5353, 53}) {
		t.Errorf("ParseForward: %v %v", f, err)
	}
	for in, want := range map[string]Disk{
		"a.img":                 {Path: "a.img", Format: "raw"},
		"a.qcow2":               {Path: "a.qcow2", Format: "qcow2"},
		"a.qcow2,format=raw,ro": {Path: "a.qcow2", Format: "raw", ReadOnly: true},
	} {
		if got, err := ParseDisk(in); err != nil || got != want {
			t.Errorf("ParseDisk(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", ",ro", "a,format=vmdk", "a,rw"} {
		if _, err := ParseDisk(bad); err == nil {
			t.Errorf("ParseDisk(%q) accepted", bad)
		}
	}
}

// Parsers of user input never panic and keep their promises on any input.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{"512M", "2GiB", "tcp:2222:22", "a.img,format=qcow2,ro", "/a:b:ro", "x:y:z:ro", "", ":", ",,,", "9999999999T", "lan1=10.0.0.1/24", "a=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if mib, err := ParseMemory(s); err == nil && (mib < MinMemoryMiB || mib > MaxMemoryMiB) {
			t.Errorf("ParseMemory(%q) = %d, out of range", s, mib)
		}
		if fw, err := ParseForward(s); err == nil {
			if fw.HostPort < 1 || fw.HostPort > 65535 || fw.GuestPort < 1 || fw.GuestPort > 65535 {
				t.Errorf("ParseForward(%q) = %+v", s, fw)
			}
			if back, err := ParseForward(fw.String()); err != nil || back != fw {
				t.Errorf("ParseForward round trip %q: %+v %v", s, back, err)
			}
		}
		if d, err := ParseDisk(s); err == nil && d.Validate() != nil {
			t.Errorf("ParseDisk(%q) = %+v: %v", s, d, d.Validate())
		}
		if sh, err := ParseShare(s); err == nil && sh.Validate() != nil {
			t.Errorf("ParseShare(%q) = %+v: %v", s, sh, sh.Validate())
		}
		if fw, err := ParseForward(s); err == nil && fw.Validate() != nil {
			t.Errorf("ParseForward(%q) = %+v: %v", s, fw, fw.Validate())
		}
		if v, err := ParseVLAN(s); err == nil {
			if v.Validate() != nil {
				t.Errorf("ParseVLAN(%q) = %+v: %v", s, v, v.Validate())
			}
			if back, err := ParseVLAN(v.String()); err != nil || back != v {
				t.Errorf("ParseVLAN round trip %q: %+v %v", s, back, err)
			}
		}
	})
}
