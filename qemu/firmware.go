package qemu

import (
	"os"
	"path/filepath"

	"github.com/sonix-run/sonix-run/vmm"
)

// qbootFile is QEMU's minimal x86 firmware (pc-bios/qboot.rom), installed
// with its other firmware by QEMU's own install and Debian's
// qemu-system-data.
const qbootFile = "qboot.rom"

// resolveFirmware picks the firmware QEMU boots with (vm.Firmware). A
// kernel booted through its PVH entry needs nothing of a BIOS: under TCG
// SeaBIOS spends about 0.1 s of emulated time before handing over, qboot
// next to nothing. qboot is used only where it was measured (TCG, PVH; an
// x86_64 bzImage or a disk boot keeps SeaBIOS) and only when this QEMU
// installed it beside itself: bin/../share/qemu/qboot.rom, as QEMU's own
// install and Debian lay it out. Otherwise QEMU keeps its default firmware. Call it
// after resolveKernel.
func resolveFirmware(vm *vmm.VM, qemuPath string, log vmm.Log) {
	vm.Firmware = ""
	if vm.Arch != vmm.X86_64 || vm.Accel != vmm.AccelTCG || vm.BootKernel == "" || vm.KernelAsIs {
		return
	}
	f := qbootBeside(qemuPath)
	if f == "" {
		log.Detail("sonix-run: %s has no %s beside it; booting with its default firmware", qemuPath, qbootFile)
		return
	}
	vm.Firmware = f
	log.Detail("sonix-run: booting with the qboot firmware %s", f)
}

// qbootBeside is qboot.rom in the data directory of the QEMU at qemuPath
// (symbolic links followed), or "" when there is none.
func qbootBeside(qemuPath string) string {
	exe, err := filepath.EvalSymlinks(qemuPath)
	if err != nil {
		return ""
	}
	f := filepath.Join(filepath.Dir(filepath.Dir(exe)), "share", "qemu", qbootFile)
	if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return f
}
