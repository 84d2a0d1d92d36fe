package qemu

import (
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

func testVM() *vmm.VM {
	return &vmm.VM{
		Name: "sonix-run", Arch: vmm.X86_64, Accel: vmm.AccelTCG, CPUs: 2, MemoryMiB: 1024,
		Kernel: "/s/k/bzImage", Initrd: "/s/i/initrd",
		BootParams: []string{"init=/nix/store/t/init", "loglevel=4"},
		UserParams: []string{"quiet", "sonix.test=x"},
		Devices: vmm.Devices{Shares: []vmm.Share{
			{Tag: "store", HostDir: "/s", ReadOnly: true},
			{Tag: "modules", HostDir: "/m", ReadOnly: true},
		}},
		RunDir: "/run/r",
	}
}

// pairs returns the values that follow each occurrence of flag.
func pairs(argv []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			out = append(out, argv[i+1])
		}
	}
	return out
}

func has(argv []string, arg string) bool {
	for _, a := range argv {
		if a == arg {
			return true
		}
	}
	return false
}

func TestArgv(t *testing.T) {
	tests := []struct {
		name   string
		change func(vm *vmm.VM)
		check  func(t *testing.T, argv []string)
	}{
		{"direct kernel boot", nil, func(t *testing.T, a []string) {
			want := map[string]string{"-kernel": "/s/k/bzImage", "-initrd": "/s/i/initrd",
				"-append": "init=/nix/store/t/init loglevel=4 console=ttyS0 panic=-1 no_timer_check quiet sonix.test=x"}
			for flag, v := range want {
				if got := pairs(a, flag); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want %q", flag, got, v)
				}
			}
		}},
		{"the kernel Resolve chose is booted", func(vm *vmm.VM) { vm.BootKernel = "/cache/kernels/abc-x1/vmlinux" }, func(t *testing.T, a []string) {
			if got := pairs(a, "-kernel"); len(got) != 1 || got[0] != "/cache/kernels/abc-x1/vmlinux" {
				t.Errorf("-kernel = %q, want the cached vmlinux", got)
			}
		}},
		{"the firmware Resolve chose replaces QEMU's default", func(vm *vmm.VM) { vm.Firmware = "/q/share/qemu/qboot.rom" }, func(t *testing.T, a []string) {
			if got := pairs(a, "-bios"); len(got) != 1 || got[0] != "/q/share/qemu/qboot.rom" {
				t.Errorf("-bios = %q, want qboot", got)
			}
		}},
		{"no firmware chosen: QEMU's default", nil, func(t *testing.T, a []string) {
			if has(a, "-bios") {
				t.Errorf("-bios without a chosen firmware: %q", a)
			}
		}},
		{"KernelAsIs boots the image even with a BootKernel", func(vm *vmm.VM) {
			vm.BootKernel, vm.KernelAsIs = "/cache/kernels/abc-x1/vmlinux", true
		}, func(t *testing.T, a []string) {
			if got := pairs(a, "-kernel"); len(got) != 1 || got[0] != "/s/k/bzImage" {
				t.Errorf("-kernel = %q, want the image as given", got)
			}
		}},
		{"a dry run's extracted kernel is a word of its own", func(vm *vmm.VM) { vm.BootKernel = vmm.ExtractedKernel }, func(t *testing.T, a []string) {
			if got := pairs(a, "-kernel"); len(got) != 1 || got[0] != vmm.ExtractedKernel {
				t.Errorf("-kernel = %q, want %q", got, vmm.ExtractedKernel)
			}
			if got := pairs(a, "-append"); strings.Contains(got[0], "nokaslr") {
				t.Errorf("PVH boot changed the command line: %q", got)
			}
		}},
		{"no initrd", func(vm *vmm.VM) { vm.Initrd = "" }, func(t *testing.T, a []string) {
			if has(a, "-initrd") {
				t.Error("-initrd given without an initrd")
			}
		}},
		{"no defaults, no reboot", nil, func(t *testing.T, a []string) {
			for _, f := range []string{"-nodefaults", "-no-user-config", "-no-reboot"} {
				if !has(a, f) {
					t.Errorf("missing %s", f)
				}
			}
		}},
		{"shared memfd memory sized like -m", func(vm *vmm.VM) { vm.MemoryMiB = 3072 }, func(t *testing.T, a []string) {
			if got := pairs(a, "-m"); len(got) != 1 || got[0] != "3072M" {
				t.Errorf("-m = %q", got)
			}
			if !has(a, "memory-backend-memfd,id=mem,size=3072M,share=on") {
				t.Errorf("no shared memfd backend of 3072M in %q", pairs(a, "-object"))
			}
			if got := pairs(a, "-machine"); len(got) != 1 || !strings.Contains(got[0], "memory-backend=mem") {
				t.Errorf("-machine %q does not use the backend", got)
			}
		}},
		{"one vhost-user-fs device per share", nil, func(t *testing.T, a []string) {
			devs := pairs(a, "-device")
			want := []string{"vhost-user-fs-pci,queue-size=1024,chardev=fs0,tag=store", "vhost-user-fs-pci,queue-size=1024,chardev=fs1,tag=modules"}
			for _, w := range want {
				if !has(devs, w) {
					t.Errorf("missing -device %s in %q", w, devs)
				}
			}
			chardevs := pairs(a, "-chardev")
			if !has(chardevs, "socket,id=fs0,path=/run/r/fs0.sock") || !has(chardevs, "socket,id=fs1,path=/run/r/fs1.sock") {
				t.Errorf("share sockets missing from %q", chardevs)
			}
		}},
		{"serial console on stdio, QMP socket", nil, func(t *testing.T, a []string) {
			if !has(pairs(a, "-chardev"), "stdio,id=console") || !has(pairs(a, "-serial"), "chardev:console") {
				t.Error("no serial console on stdio")
			}
			if got := pairs(a, "-qmp"); len(got) != 1 || got[0] != "unix:/run/r/qmp.sock,server=on,wait=off" {
				t.Errorf("-qmp = %q", got)
			}
		}},
		{"panics are reported", nil, func(t *testing.T, a []string) {
			if !has(pairs(a, "-device"), "pvpanic") || !has(pairs(a, "-action"), "panic=exit-failure") {
				t.Error("no pvpanic device or panic action")
			}
		}},
		{"commas in paths escaped", func(vm *vmm.VM) {
			vm.RunDir = "/tmp/a,b"
			vm.Shares[0].Tag = "st,ore"
		}, func(t *testing.T, a []string) {
			if !has(pairs(a, "-chardev"), "socket,id=fs0,path=/tmp/a,,b/fs0.sock") {
				t.Errorf("socket path not escaped: %q", pairs(a, "-chardev"))
			}
			if !has(pairs(a, "-device"), "vhost-user-fs-pci,queue-size=1024,chardev=fs0,tag=st,,ore") {
				t.Errorf("tag not escaped: %q", pairs(a, "-device"))
			}
			if got := pairs(a, "-qmp"); got[0] != "unix:/tmp/a,,b/qmp.sock,server=on,wait=off" {
				t.Errorf("-qmp = %q", got)
			}
		}},
		{"tcg uses -cpu max", nil, func(t *testing.T, a []string) {
			if got := pairs(a, "-cpu"); got[0] != "max" || !strings.Contains(pairs(a, "-machine")[0], "accel=tcg") {
				t.Errorf("-cpu %q -machine %q", got, pairs(a, "-machine"))
			}
		}},
		{"kvm uses -cpu host", func(vm *vmm.VM) { vm.Accel = vmm.AccelKVM }, func(t *testing.T, a []string) {
			if got := pairs(a, "-cpu"); got[0] != "host" || !strings.Contains(pairs(a, "-machine")[0], "q35,accel=kvm") {
				t.Errorf("-cpu %q -machine %q", got, pairs(a, "-machine"))
			}
		}},
		{"cpus", func(vm *vmm.VM) { vm.CPUs = 4 }, func(t *testing.T, a []string) {
			if got := pairs(a, "-smp"); got[0] != "4" {
				t.Errorf("-smp %q", got)
			}
		}},
		{"aarch64 uses virt and ttyAMA0", func(vm *vmm.VM) { vm.Arch = vmm.AArch64 }, func(t *testing.T, a []string) {
			if a[0] != "qemu" || !strings.HasPrefix(pairs(a, "-machine")[0], "virt,") {
				t.Errorf("machine %q", pairs(a, "-machine"))
			}
			if !strings.Contains(pairs(a, "-append")[0], "console=ttyAMA0") || !has(pairs(a, "-device"), "pvpanic-pci") {
				t.Errorf("aarch64 console or pvpanic wrong: %q", a)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := testVM()
			if tt.change != nil {
				tt.change(vm)
			}
			argv, err := Argv(vm, "qemu")
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, argv)
		})
	}
}

func TestArgvRejects(t *testing.T) {
	vm := testVM()
	vm.Accel = vmm.AccelAuto
	if _, err := Argv(vm, "qemu"); err == nil {
		t.Error("an unresolved accelerator was accepted")
	}
	vm = testVM()
	vm.Arch = "riscv64"
	if _, err := Argv(vm, "qemu"); err == nil {
		t.Error("an unknown architecture was accepted")
	}
}

func TestMultibootProbeHeader(t *testing.T) {
	img := multibootProbe()
	var sum uint32
	for i := 0; i < 3; i++ {
		sum += uint32(img[4*i]) | uint32(img[4*i+1])<<8 | uint32(img[4*i+2])<<16 | uint32(img[4*i+3])<<24
	}
	if sum != 0 {
		t.Errorf("multiboot magic+flags+checksum = %#x, want 0", sum)
	}
}

func TestArgvKernelDeveloperOptions(t *testing.T) {
	vm := testVM()
	vm.GDBPort, vm.GDBWait = 1234, true
	vm.QEMUArgs = []string{"-device", "virtio-balloon-pci"}
	a, err := Argv(vm, "qemu")
	if err != nil {
		t.Fatal(err)
	}
	if got := pairs(a, "-gdb"); len(got) != 1 || got[0] != "tcp:127.0.0.1:1234" {
		t.Errorf("-gdb = %q", got)
	}
	if !has(a, "-S") {
		t.Error("--gdb-wait did not add -S")
	}
	if !strings.Contains(pairs(a, "-append")[0], "panic=-1 no_timer_check nokaslr quiet") {
		t.Errorf("nokaslr missing or misplaced: %q", pairs(a, "-append"))
	}
	if tail := a[len(a)-2:]; tail[0] != "-device" || tail[1] != "virtio-balloon-pci" {
		t.Errorf("--qemu-arg not last: %q", tail)
	}
	vm.GDBPort, vm.GDBWait = 0, false
	if a, _ = Argv(vm, "qemu"); has(a, "-S") || has(a, "-gdb") || strings.Contains(pairs(a, "-append")[0], "nokaslr") {
		t.Errorf("gdb options without --gdb: %q", a)
	}
}

func TestArgvDevices(t *testing.T) {
	vm := testVM()
	vm.Network = vmm.Network{Mode: vmm.NetUser, Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 2222, GuestPort: 22}, {Proto: "udp", HostPort: 5353, GuestPort: 53}}}
	vm.Disks = []vmm.Disk{{Path: "/img/a,b.raw", Format: "raw"}, {Path: "/img/c.qcow2", Format: "qcow2", ReadOnly: true}}
	a, err := Argv(vm, "qemu")
	if err != nil {
		t.Fatal(err)
	}
	if got := pairs(a, "-netdev"); len(got) != 1 || got[0] != "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5353-:53" {
		t.Errorf("-netdev %q", got)
	}
	devs := pairs(a, "-device")
	for _, w := range []string{"virtio-net-pci,netdev=net0,romfile=", "virtio-blk-pci,drive=disk0,serial=disk0", "virtio-blk-pci,drive=disk1,serial=disk1"} {
		if !has(devs, w) {
			t.Errorf("missing -device %s", w)
		}
	}
	want := []string{"file=/img/a,,b.raw,format=raw,if=none,id=disk0", "file=/img/c.qcow2,format=qcow2,if=none,id=disk1,readonly=on"}
	if got := pairs(a, "-drive"); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("-drive %q, want %q", got, want)
	}
	vm.Network = vmm.Network{Mode: vmm.NetRestricted, Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 8080, GuestPort: 80}}}
	a, _ = Argv(vm, "qemu")
	if got := pairs(a, "-netdev"); len(got) != 1 || got[0] != "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80" {
		t.Errorf("--net restricted: -netdev %q", got)
	}
	vm.Network = vmm.Network{Mode: vmm.NetNone}
	if a, _ = Argv(vm, "qemu"); has(a, "-netdev") {
		t.Error("--net none still has a NIC")
	}
}
