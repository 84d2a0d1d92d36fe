package qemu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

type detailLog struct {
	vmm.Log
	details []string
}

func (l *detailLog) Detail(format string, args ...any) { l.details = append(l.details, format) }

// fakeQEMU lays out a QEMU as its own install does: bin/ with the
// emulator (reached through a link, as a Nix profile does) and
// share/qemu/ with its firmware, qboot.rom included when withQboot.
func fakeQEMU(t *testing.T, withQboot bool) (exe, qboot string) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"store/bin", "store/share/qemu", "profile/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(root, "store/bin/qemu-system-x86_64")
	if err := os.WriteFile(real, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(root, "profile/bin/qemu-system-x86_64")
	if err := os.Symlink(real, exe); err != nil {
		t.Fatal(err)
	}
	qboot = filepath.Join(root, "store/share/qemu/qboot.rom")
	if withQboot {
		if err := os.WriteFile(qboot, make([]byte, 65536), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return exe, qboot
}

func TestResolveFirmware(t *testing.T) {
	exe, qboot := fakeQEMU(t, true)
	pvh := func(vm *vmm.VM) { vm.BootKernel = "/cache/kernels/abc-x1/vmlinux" }
	tests := []struct {
		name   string
		change func(vm *vmm.VM)
		want   string
	}{
		{"TCG, PVH: qboot", pvh, qboot},
		{"a dry run's PVH kernel: qboot", func(vm *vmm.VM) { vm.BootKernel = vmm.ExtractedKernel }, qboot},
		{"the bzImage as it is: the default", nil, ""},
		{"--kernel-format bzimage: the default", func(vm *vmm.VM) { pvh(vm); vm.KernelAsIs = true }, ""},
		{"KVM (not measured): the default", func(vm *vmm.VM) { pvh(vm); vm.Accel = vmm.AccelKVM }, ""},
		{"aarch64: the default", func(vm *vmm.VM) { pvh(vm); vm.Arch = vmm.AArch64 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := testVM()
			vm.Firmware = "stale"
			if tt.change != nil {
				tt.change(vm)
			}
			resolveFirmware(vm, exe, &detailLog{})
			if vm.Firmware != tt.want {
				t.Errorf("Firmware = %q, want %q", vm.Firmware, tt.want)
			}
		})
	}
}

func TestResolveFirmwareWithoutQboot(t *testing.T) {
	exe, _ := fakeQEMU(t, false)
	vm := testVM()
	vm.BootKernel = "/cache/kernels/abc-x1/vmlinux"
	log := &detailLog{}
	resolveFirmware(vm, exe, log)
	if vm.Firmware != "" {
		t.Errorf("Firmware = %q without a qboot.rom", vm.Firmware)
	}
	if len(log.details) != 1 {
		t.Errorf("details %q, want one line saying why", log.details)
	}
	// A wrapper script with the QEMU elsewhere (scripts/install-current-qemu)
	// has no share/ beside it either.
	if got := qbootBeside(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Errorf("qbootBeside of a missing file = %q", got)
	}
}
