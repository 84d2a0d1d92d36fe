package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

// ProbeTimeout bounds the KVM probe. A healthy host finishes it in about
// 0.1 s; a nested host whose KVM opens but crawls (every VM exit costing
// tens of microseconds) needs over 10 s, and a real kernel never boots there.
const ProbeTimeout = 2 * time.Second

// hostArch is the architecture of this machine, as launcher names it.
func hostArch() vmm.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return vmm.X86_64
	case "arm64":
		return vmm.AArch64
	}
	return vmm.Arch(runtime.GOARCH)
}

// kvmUsable says why KVM cannot run a guest of arch here, or nil.
func kvmUsable(arch vmm.Arch) error {
	if arch != hostArch() {
		return fmt.Errorf("KVM runs only %s guests on this %s host", hostArch(), hostArch())
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("/dev/kvm does not exist (no hardware virtualization, or the kvm module is not loaded)")
	case errors.Is(err, os.ErrPermission):
		return errors.New("no permission to open /dev/kvm: join its group (usually `sudo usermod -aG kvm $USER`, then log in again)")
	case err != nil:
		return fmt.Errorf("opening /dev/kvm: %w", err)
	}
	f.Close()
	return nil
}

// resolveAccel picks the accelerator for --accel auto, and checks --accel kvm.
// With dryRun, auto is decided from /dev/kvm alone: the probe starts QEMU.
func resolveAccel(ctx context.Context, vm *vmm.VM, qemuPath string, dryRun bool, log vmm.Log) error {
	switch vm.Accel {
	case vmm.AccelTCG:
		return nil
	case vmm.AccelKVM:
		if err := kvmUsable(vm.Arch); err != nil {
			return fmt.Errorf("--accel kvm: %w", err)
		}
		return nil
	case vmm.AccelAuto, "":
	default:
		return fmt.Errorf("--accel %q: expected auto, kvm or tcg", vm.Accel)
	}
	if err := kvmUsable(vm.Arch); err != nil {
		log.Notice("sonix-run: using TCG (slow): %v", err)
		vm.Accel = vmm.AccelTCG
		return nil
	}
	if pvm := softwareKVM(); pvm != "" {
		log.Notice("sonix-run: using TCG (slow): /dev/kvm is %s; --accel kvm forces KVM", pvm)
		vm.Accel = vmm.AccelTCG
		return nil
	}
	verdict, known := cachedProbe(qemuPath)
	switch {
	case known:
	case dryRun:
		vm.Accel = vmm.AccelKVM
		log.Notice("sonix-run: --dry-run starts nothing, so KVM was not probed; a real run falls back to TCG if KVM does not run a test guest within %v", ProbeTimeout)
		return nil
	default:
		verdict = probeOK
		if err := probeKVM(ctx, vm, qemuPath); err != nil {
			if ctx.Err() != nil {
				// The run was cancelled, not KVM found wanting: remember nothing.
				return ctx.Err()
			}
			verdict = oneLine(err.Error())
		}
		rememberProbe(qemuPath, verdict)
	}
	if verdict != probeOK {
		log.Notice("sonix-run: using TCG (slow): /dev/kvm opens but %s; --accel kvm forces KVM", verdict)
		vm.Accel = vmm.AccelTCG
		return nil
	}
	vm.Accel = vmm.AccelKVM
	return nil
}

const probeOK = "ok"

// moduleDir is where the kernel lists its loaded modules (a variable for
// tests).
var moduleDir = "/sys/module"

// softwareKVM says why /dev/kvm is not hardware virtualization, or "".
// kvm_pvm (pagetable-based virtualization, for hosts that are VMs
// themselves) serves /dev/kvm without VT-x or AMD-V: the probe's tiny
// guest passes, but a real kernel crawls through emulated page-table
// writes and can stop on an instruction it cannot emulate (a KVM internal
// error). Users of such hosts run TCG unless they ask.
func softwareKVM() string {
	has := func(m string) bool {
		_, err := os.Stat(moduleDir + "/" + m)
		return err == nil
	}
	if has("kvm_pvm") && !has("kvm_intel") && !has("kvm_amd") {
		return "kvm_pvm's (software virtualization inside a VM), which runs ordinary guest kernels very slowly or not at all"
	}
	return ""
}

// oneLine folds a message (QEMU's assertion spans lines) into one notice line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// probeKVM boots a tiny guest under KVM on the machine type the VM will use,
// through the same firmware, and waits for it to report back. Only x86_64
// guests are probed; elsewhere opening /dev/kvm is taken as enough.
func probeKVM(ctx context.Context, vm *vmm.VM, qemuPath string) error {
	if vm.Arch != vmm.X86_64 {
		return nil
	}
	image := rundir.ProbeImage(vm.RunDir)
	if err := os.WriteFile(image, multibootProbe(), 0o600); err != nil {
		return err
	}
	defer os.Remove(image)
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	cmd := exec.Command(qemuPath, "-machine", boards[vmm.X86_64].machine+",accel=kvm", "-cpu", "host", "-m", "64M",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", image, "-device", "isa-debug-exit,iobase=0xf4,iosize=1")
	stderr := proc.NewTail(1024)
	cmd.Stderr = stderr
	if err := proc.Start(cmd); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		// isa-debug-exit makes QEMU exit with (value << 1) | 1.
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == probeValue<<1|1 {
			return nil
		}
		return fmt.Errorf("a test guest failed under KVM (%v): %s", err, stderr.String())
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		return fmt.Errorf("a test guest did not finish within %v under KVM (nested virtualization without support?)", ProbeTimeout)
	}
}

const probeValue = 0x2a

// multibootProbe is a Multiboot image that QEMU loads with -kernel: its
// 32-bit code writes probeValue to the isa-debug-exit port and halts.
func multibootProbe() []byte {
	var magic, flags, base uint32 = 0x1BADB002, 0x00010000, 0x100000 // flags: load addresses given
	checksum := 0 - (magic + flags)                                  // wraps: the three sum to zero
	header := []uint32{magic, flags, checksum, base, base, 0, 0, base + 32}
	img := make([]byte, 32)
	for i, v := range header {
		binary.LittleEndian.PutUint32(img[4*i:], v)
	}
	// mov al, probeValue; out 0xf4, al; cli; hlt; jmp back to hlt
	return append(img, 0xb0, probeValue, 0xe6, 0xf4, 0xfa, 0xf4, 0xeb, 0xfd)
}
