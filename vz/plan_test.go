package vz

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

// fakeImage is an arm64 Image as far as the header goes: the magic at 0x38,
// then some body.
func fakeImage() []byte {
	img := make([]byte, 4096)
	copy(img[imageMagicOffset:], imageMagic)
	for i := imageHeaderLen; i < len(img); i++ {
		img[i] = byte(i * 7)
	}
	return img
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// zboot wraps payload in an EFI zboot header naming comp, with the 4-byte
// size suffix the kernel build appends after the payload.
func zboot(payload []byte, comp string) []byte {
	const off = 0x200
	img := make([]byte, off, off+len(payload)+4)
	copy(img[0:], "MZ")
	copy(img[4:], "zimg")
	binary.LittleEndian.PutUint32(img[8:], off)
	binary.LittleEndian.PutUint32(img[12:], uint32(len(payload)))
	copy(img[zbootTypeOffset:], comp+"\x00")
	binary.LittleEndian.PutUint32(img[0x38:], 0x818223cd) // LINUX_PE_MAGIC, not "ARM\x64"
	img = append(img, payload...)
	return binary.LittleEndian.AppendUint32(img, 4096)
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// baseVM is an aarch64 system as launcher.Prepare builds one: the store
// and modules shares, init= first.
func baseVM(t *testing.T, kernel []byte) *vmm.VM {
	t.Helper()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	return &vmm.VM{
		Name:       "sonix-run",
		Arch:       vmm.AArch64,
		Accel:      vmm.AccelAuto,
		CPUs:       2,
		MemoryMiB:  1536,
		Kernel:     writeFile(t, dir, "Image", kernel),
		Initrd:     "/nix/store/iii-initrd/initrd",
		BootParams: []string{"init=/nix/store/sss-nixos-system/init", "loglevel=4"},
		UserParams: []string{"systemd.unit=rescue.target"},
		Devices: vmm.Devices{Shares: []vmm.Share{
			{Tag: "store", HostDir: "/nix/store", ReadOnly: true, Cache: vmm.CacheAlways},
			{Tag: "modules", HostDir: "/lib/modules", ReadOnly: true, Cache: vmm.CacheAuto},
			{Tag: "work", HostDir: "/home/me/work"},
		}},
		RunDir: run,
	}
}

var arm = Options{HostArch: vmm.AArch64}

func TestPlanEveryField(t *testing.T) {
	vm := baseVM(t, fakeImage())
	p, err := NewPlan(vm, arm)
	if err != nil {
		t.Fatal(err)
	}
	want := &Plan{
		Arch:         vmm.AArch64,
		Kernel:       vm.Kernel,
		KernelSource: vm.Kernel,
		KernelFormat: KernelImage,
		Initrd:       "/nix/store/iii-initrd/initrd",
		CommandLine:  "init=/nix/store/sss-nixos-system/init loglevel=4 console=hvc0 panic=-1 systemd.unit=rescue.target",
		CPUs:         2,
		MemoryBytes:  1536 << 20,
		Shares: []Share{
			{Tag: "store", HostDir: "/nix/store", ReadOnly: true},
			{Tag: "modules", HostDir: "/lib/modules", ReadOnly: true},
			{Tag: "work", HostDir: "/home/me/work", ReadOnly: false},
		},
		Console: "hvc0",
		Network: NetworkNAT,
		MAC:     StableMAC("toplevel:/nix/store/sss-nixos-system"),
		Entropy: true,
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("plan:\n got %+v\nwant %+v", p, want)
	}
	if err := p.Prepare(); err != nil {
		t.Errorf("Prepare of an uncompressed Image: %v", err)
	}
	if entries, _ := os.ReadDir(vm.RunDir); len(entries) != 0 {
		t.Errorf("Prepare wrote %v for an uncompressed Image", entries)
	}
}

func TestPlanOptionalParts(t *testing.T) {
	t.Run("no initrd, no user params, no shares", func(t *testing.T) {
		vm := baseVM(t, fakeImage())
		vm.Initrd, vm.UserParams, vm.Shares = "", nil, nil
		p, err := NewPlan(vm, arm)
		if err != nil {
			t.Fatal(err)
		}
		if p.Initrd != "" || p.Shares != nil || p.RosettaTag != "" {
			t.Errorf("got initrd %q shares %v rosetta %q", p.Initrd, p.Shares, p.RosettaTag)
		}
		if want := "init=/nix/store/sss-nixos-system/init loglevel=4 console=hvc0 panic=-1"; p.CommandLine != want {
			t.Errorf("command line %q, want %q", p.CommandLine, want)
		}
	})
	t.Run("rosetta", func(t *testing.T) {
		p, err := NewPlan(baseVM(t, fakeImage()), Options{HostArch: vmm.AArch64, Rosetta: true})
		if err != nil {
			t.Fatal(err)
		}
		if p.RosettaTag != "rosetta" {
			t.Errorf("RosettaTag %q, want rosetta", p.RosettaTag)
		}
		if len(p.Shares) != 3 {
			t.Errorf("the Rosetta share must not be among the plain shares: %v", p.Shares)
		}
	})
	t.Run("x86_64 on an Intel Mac: kernel passed as it is", func(t *testing.T) {
		vm := baseVM(t, []byte("MZ not inspected bzImage"))
		vm.Arch = vmm.X86_64
		p, err := NewPlan(vm, Options{HostArch: vmm.X86_64})
		if err != nil {
			t.Fatal(err)
		}
		if p.KernelFormat != KernelX86 || p.Kernel != vm.Kernel || p.Arch != vmm.X86_64 {
			t.Errorf("format %q kernel %q arch %q", p.KernelFormat, p.Kernel, p.Arch)
		}
	})
	t.Run("limits within bounds", func(t *testing.T) {
		vm := baseVM(t, fakeImage())
		vm.CPUs, vm.MemoryMiB = 8, 8192
		p, err := NewPlan(vm, Options{HostArch: vmm.AArch64, Limits: Limits{MinCPUs: 1, MaxCPUs: 8, MinMemory: 4 << 20, MaxMemory: 8 << 30}})
		if err != nil {
			t.Fatal(err)
		}
		if p.CPUs != 8 || p.MemoryBytes != 8<<30 {
			t.Errorf("CPUs %d memory %d", p.CPUs, p.MemoryBytes)
		}
	})
}

// The devices that depend on the VM's requests: the agent port with
// VM.Agent only, the network card unless --net none.
func TestPlanDevices(t *testing.T) {
	for _, tc := range []struct {
		name      string
		agent     bool
		net       string
		wantPort  string
		wantNet   string
		wantNoMAC bool
	}{
		{"defaults", false, vmm.NetUser, "", NetworkNAT, false},
		{"mode unset is user", false, "", "", NetworkNAT, false},
		{"agent", true, vmm.NetUser, vmm.AgentPortName, NetworkNAT, false},
		{"net none", false, vmm.NetNone, "", "", true},
		{"agent, net none", true, vmm.NetNone, vmm.AgentPortName, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := baseVM(t, fakeImage())
			vm.Agent = tc.agent
			vm.Network.Mode = tc.net
			p, err := NewPlan(vm, arm)
			if err != nil {
				t.Fatal(err)
			}
			if p.AgentPort != tc.wantPort {
				t.Errorf("AgentPort %q, want %q", p.AgentPort, tc.wantPort)
			}
			if p.Network != tc.wantNet {
				t.Errorf("Network %q, want %q", p.Network, tc.wantNet)
			}
			if (p.MAC == nil) != tc.wantNoMAC {
				t.Errorf("MAC %v with network %q", p.MAC, p.Network)
			}
			if p.Console != ConsoleDevice || !strings.Contains(p.CommandLine, "console=hvc0") {
				t.Errorf("console %q, command line %q", p.Console, p.CommandLine)
			}
		})
	}
}

func TestPlanRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(vm *vmm.VM, o *Options)
		want string
	}{
		{"empty tag", func(vm *vmm.VM, o *Options) { vm.Shares[2].Tag = "" }, "empty virtio-fs tag"},
		{"36-byte tag", func(vm *vmm.VM, o *Options) { vm.Shares[2].Tag = strings.Repeat("t", 36) }, "is 36 bytes; Virtualization.framework takes at most 35"},
		{"36-byte UTF-8 tag", func(vm *vmm.VM, o *Options) { vm.Shares[2].Tag = strings.Repeat("é", 18) }, "is 36 bytes"},
		{"tag with NUL", func(vm *vmm.VM, o *Options) { vm.Shares[2].Tag = "a\x00b" }, "NUL"},
		{"duplicate tag", func(vm *vmm.VM, o *Options) { vm.Shares[2].Tag = "store" }, `two shares use the tag "store"`},
		{"share without directory", func(vm *vmm.VM, o *Options) { vm.Shares[2].HostDir = "" }, "no host directory"},
		{"guest of another architecture", func(vm *vmm.VM, o *Options) { vm.Arch = vmm.X86_64 }, "runs only guests of the host's architecture"},
		{"accel tcg", func(vm *vmm.VM, o *Options) { vm.Accel = vmm.AccelTCG }, "--accel tcg is for the qemu backend"},
		{"accel kvm", func(vm *vmm.VM, o *Options) { vm.Accel = vmm.AccelKVM }, "--accel kvm is for the qemu backend"},
		{"no kernel", func(vm *vmm.VM, o *Options) { vm.Kernel = "" }, "no kernel"},
		{"missing kernel", func(vm *vmm.VM, o *Options) { vm.Kernel += ".missing" }, "no such file"},
		{"zero CPUs", func(vm *vmm.VM, o *Options) { vm.CPUs = 0 }, "--cpus must be at least 1"},
		{"too many CPUs", func(vm *vmm.VM, o *Options) { o.Limits.MaxCPUs = 1 }, "--cpus 2: Virtualization.framework allows at most 1"},
		{"too few CPUs", func(vm *vmm.VM, o *Options) { o.Limits.MinCPUs = 4 }, "needs at least 4"},
		{"zero memory", func(vm *vmm.VM, o *Options) { vm.MemoryMiB = 0 }, "--memory must be positive"},
		// Bounds that are not whole MiB are stated as the sizes --memory can give.
		{"memory over a ragged maximum", func(vm *vmm.VM, o *Options) { o.Limits.MaxMemory = 1024<<20 + 12345 }, "--memory 1536M: Virtualization.framework allows at most 1024M"},
		{"memory under a ragged minimum", func(vm *vmm.VM, o *Options) { o.Limits.MinMemory = 1536<<20 + 1 }, "--memory 1536M: Virtualization.framework needs at least 1537M"},
		{"rosetta on an Intel Mac", func(vm *vmm.VM, o *Options) {
			vm.Arch, o.HostArch, o.Rosetta = vmm.X86_64, vmm.X86_64, true
		}, "--rosetta needs an Apple silicon Mac"},
		{"rosetta tag taken", func(vm *vmm.VM, o *Options) { o.Rosetta = true; vm.Shares[2].Tag = "rosetta" }, `a share already uses the tag "rosetta"`},
		{"multicast MAC", func(vm *vmm.VM, o *Options) { o.MAC = net.HardwareAddr{0x03, 0, 0, 0, 0, 1} }, "multicast"},
		{"short MAC", func(vm *vmm.VM, o *Options) { o.MAC = net.HardwareAddr{0x02, 0, 0} }, "want 6 bytes"},
		{"unknown network mode", func(vm *vmm.VM, o *Options) { vm.Network.Mode = "bridged" }, `--net "bridged": the vz backend offers user`},
		{"forward", func(vm *vmm.VM, o *Options) {
			vm.Network = vmm.Network{Mode: vmm.NetUser, Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 8080, GuestPort: 80}}}
		}, "--forward tcp:8080:80: the vz backend cannot forward ports"},
		{"qcow2 disk", func(vm *vmm.VM, o *Options) { vm.Disks = []vmm.Disk{{Path: "/img.qcow2", Format: "qcow2"}} },
			"--disk /img.qcow2: format qcow2: Virtualization.framework takes raw images only; convert with qemu-img convert -O raw"},
		{"qcow2 state", func(vm *vmm.VM, o *Options) {
			vm.Disks = []vmm.Disk{{Path: "/s.qcow2", Format: "qcow2", Serial: "sonix-state"}}
		}, "--state /s.qcow2: format qcow2: Virtualization.framework takes raw images only"},
		{"unknown disk format", func(vm *vmm.VM, o *Options) { vm.Disks = []vmm.Disk{{Path: "/img.vdi", Format: "vdi"}} },
			`--disk /img.vdi: format "vdi": Virtualization.framework takes raw images only`},
		{"disk without a file", func(vm *vmm.VM, o *Options) { vm.Disks = []vmm.Disk{{Format: "raw"}} }, "--disk: no image file"},
		{"21-byte identifier", func(vm *vmm.VM, o *Options) {
			vm.Disks = []vmm.Disk{{Path: "/img", Format: "raw", Serial: strings.Repeat("s", 21)}}
		}, `--disk /img: identifier "sssssssssssssssssssss" is 21 bytes; Virtualization.framework takes at most 20`},
		{"non-ASCII identifier", func(vm *vmm.VM, o *Options) {
			vm.Disks = []vmm.Disk{{Path: "/img", Format: "raw", Serial: "état"}}
		}, "byte 0xc3: want printable ASCII"},
		{"identifier with NUL", func(vm *vmm.VM, o *Options) {
			vm.Disks = []vmm.Disk{{Path: "/img", Format: "raw", Serial: "a\x00b"}}
		}, "byte 0x0: want printable ASCII"},
		{"identifier with newline", func(vm *vmm.VM, o *Options) {
			vm.Disks = []vmm.Disk{{Path: "/img", Format: "raw", Serial: "a\nb"}}
		}, "byte 0xa: want printable ASCII"},
		{"duplicate identifier", func(vm *vmm.VM, o *Options) {
			// The second disk's number collides with the first's serial.
			vm.Disks = []vmm.Disk{{Path: "/a", Format: "raw", Serial: "disk1"}, {Path: "/b", Format: "raw"}}
		}, `--disk /b: /a already uses the identifier "disk1"`},
		{"gdb", func(vm *vmm.VM, o *Options) { vm.GDBPort = 1234 }, "--gdb needs the qemu backend"},
		{"qemu args", func(vm *vmm.VM, o *Options) { vm.QEMUArgs = []string{"-s"} }, "--qemu-arg needs the qemu backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := baseVM(t, fakeImage())
			o := arm
			tc.edit(vm, &o)
			_, err := NewPlan(vm, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Disks keep their order, path and read-only flag; the identifier is the
// serial, or diskN by position as under the qemu backend; the --state disk
// keeps sonix-state, which the guest looks for.
func TestPlanDisks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		disks []vmm.Disk
		want  []Disk
	}{
		{"none", nil, nil},
		{"one raw", []vmm.Disk{{Path: "/a.img", Format: "raw"}}, []Disk{{Path: "/a.img", Identifier: "disk0"}}},
		{"format unset is raw", []vmm.Disk{{Path: "a.img"}}, []Disk{{Path: "a.img", Identifier: "disk0"}}},
		{"read-only, then state", []vmm.Disk{
			{Path: "/ro.img", Format: "raw", ReadOnly: true},
			{Path: "/rw.img", Format: "raw"},
			{Path: "/home/me/state.img", Format: "raw", Serial: "sonix-state"},
		}, []Disk{
			{Path: "/ro.img", ReadOnly: true, Identifier: "disk0"},
			{Path: "/rw.img", Identifier: "disk1"},
			{Path: "/home/me/state.img", Identifier: "sonix-state"},
		}},
		{"20-byte identifier, the longest", []vmm.Disk{{Path: "/a", Format: "raw", Serial: "abcdefghij0123456789"}},
			[]Disk{{Path: "/a", Identifier: "abcdefghij0123456789"}}},
		{"printable ASCII edges", []vmm.Disk{{Path: "/a", Format: "raw", Serial: " x~"}}, []Disk{{Path: "/a", Identifier: " x~"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := baseVM(t, fakeImage())
			vm.Disks = tc.disks
			p, err := NewPlan(vm, arm)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Disks, tc.want) {
				t.Errorf("disks:\n got %+v\nwant %+v", p.Disks, tc.want)
			}
		})
	}
}

func TestTagLimit(t *testing.T) {
	vm := baseVM(t, fakeImage())
	vm.Shares[2].Tag = strings.Repeat("t", 35) // the longest the framework takes
	if _, err := NewPlan(vm, arm); err != nil {
		t.Errorf("35-byte tag: %v", err)
	}
}

func TestMemoryIsWholeMiB(t *testing.T) {
	for _, mibs := range []int{64, 1000, 1536, 2047, 65536} {
		b, err := planMemory(mibs, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if b%(1<<20) != 0 || b != uint64(mibs)<<20 {
			t.Errorf("%dM gives %d bytes", mibs, b)
		}
	}
}

func TestMAC(t *testing.T) {
	a := StableMAC("toplevel:/nix/store/aaa-system")
	if !reflect.DeepEqual(a, StableMAC("toplevel:/nix/store/aaa-system")) {
		t.Error("the same key gives different addresses")
	}
	if reflect.DeepEqual(a, StableMAC("toplevel:/nix/store/bbb-system")) {
		t.Error("different systems share an address")
	}
	for _, key := range []string{"", "x", "toplevel:/nix/store/aaa-system", "kernel:/k"} {
		m := StableMAC(key)
		if len(m) != 6 || m[0]&0x01 != 0 || m[0]&0x02 == 0 {
			t.Errorf("StableMAC(%q) = %s: want 6 bytes, unicast, locally administered", key, m)
		}
	}

	// The system's toplevel decides, not the kernel's path or the run.
	vm1, vm2 := baseVM(t, fakeImage()), baseVM(t, fakeImage())
	p1, _ := NewPlan(vm1, arm)
	p2, _ := NewPlan(vm2, arm)
	if vm1.Kernel == vm2.Kernel || !reflect.DeepEqual(p1.MAC, p2.MAC) {
		t.Errorf("same system, different kernel files: %s vs %s", p1.MAC, p2.MAC)
	}
	vm2.BootParams[0] = "init=/nix/store/ttt-other-system/init"
	if p2, _ = NewPlan(vm2, arm); reflect.DeepEqual(p1.MAC, p2.MAC) {
		t.Errorf("different systems got the same MAC %s", p1.MAC)
	}

	// Without init= the kernel's path decides.
	vm1.BootParams = []string{"loglevel=4"}
	p1, _ = NewPlan(vm1, arm)
	if want := StableMAC("kernel:" + vm1.Kernel); !reflect.DeepEqual(p1.MAC, want) {
		t.Errorf("MAC without init= is %s, want %s", p1.MAC, want)
	}

	// An explicit address wins and is copied.
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	p1, err := NewPlan(vm1, Options{HostArch: vmm.AArch64, MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	mac[5] = 0
	if p1.MAC.String() != "52:54:00:12:34:56" {
		t.Errorf("MAC %s, want 52:54:00:12:34:56", p1.MAC)
	}
}
