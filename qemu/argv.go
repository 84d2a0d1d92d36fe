// Package qemu is the QEMU backend: it turns a vmm.VM into a QEMU
// command line (Argv, a pure function), starts the virtiofsd daemons its
// shares need and QEMU, and supervises them, driving the VM's lifecycle
// through QMP.
package qemu

import (
	"fmt"
	"strings"

	"github.com/sonix-run/sonix-run/rundir"
	"github.com/sonix-run/sonix-run/vmm"
)

// board holds what differs between guest architectures.
type board struct {
	binary  string   // qemu-system-*
	machine string   // -machine type and options before accel
	console string   // the guest's name for the serial console
	pvpanic string   // the panic-reporting device
	rng     string   // the entropy device
	extra   []string // other per-machine arguments
}

var boards = map[vmm.Arch]board{
	// q35 over microvm: it never hung under TCG in our boots, microvm did
	// (no HPET/PM timer to calibrate the TSC against).
	vmm.X86_64:  {binary: "qemu-system-x86_64", machine: "q35", console: "ttyS0", pvpanic: "pvpanic", rng: "virtio-rng-pci"},
	vmm.AArch64: {binary: "qemu-system-aarch64", machine: "virt,gic-version=max", console: "ttyAMA0", pvpanic: "pvpanic-pci", rng: "virtio-rng-pci"},
}

// QMPSocket is where the QMP socket of a run lives.
func QMPSocket(vm *vmm.VM) string { return rundir.QMPSocket(vm.RunDir) }

// AgentSocket is the Unix socket behind the guest agent's port.
func AgentSocket(vm *vmm.VM) string { return rundir.AgentSocket(vm.RunDir) }

// MachineParams are the kernel parameters the QEMU machine needs: its console,
// and panic=-1 so that a panic reboots at once, which -no-reboot turns into
// the end of the run.
func MachineParams(arch vmm.Arch) []string {
	return []string{"console=" + boards[arch].console, "panic=-1"}
}

// Binary is the QEMU system emulator for arch.
func Binary(arch vmm.Arch) (string, error) {
	m, ok := boards[arch]
	if !ok {
		return "", fmt.Errorf("QEMU backend: unsupported architecture %q", arch)
	}
	return m.binary, nil
}

// Argv returns the QEMU command line for vm, with qemuPath as argv[0].
// vm.Accel must be resolved (kvm or tcg).
func Argv(vm *vmm.VM, qemuPath string) ([]string, error) {
	m, ok := boards[vm.Arch]
	if !ok {
		return nil, fmt.Errorf("QEMU backend: unsupported architecture %q", vm.Arch)
	}
	if vm.Accel != vmm.AccelKVM && vm.Accel != vmm.AccelTCG {
		return nil, fmt.Errorf("QEMU backend: accelerator %q is not resolved", vm.Accel)
	}
	cpu := "max"
	if vm.Accel == vmm.AccelKVM {
		cpu = "host"
	}
	mem := fmt.Sprintf("%dM", vm.MemoryMiB)
	a := []string{qemuPath,
		"-name", opt(vm.Name),
		// vhost-user-fs needs guest RAM that virtiofsd can map: a shared
		// memfd backend, sized exactly like -m.
		"-machine", m.machine + ",accel=" + string(vm.Accel) + ",memory-backend=mem",
		"-cpu", cpu,
		"-smp", fmt.Sprint(vm.CPUs),
		"-m", mem,
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-nodefaults", "-no-user-config", "-display", "none",
		// Defense in depth against a guest that breaks into QEMU: its
		// seccomp sandbox refuses what a VM of ours never needs (raising
		// privileges, starting programs, changing scheduling, obsolete
		// calls).
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		// A guest reboot ends the run instead of booting again.
		"-no-reboot",
		// The console is QEMU's stdin/stdout, which sonix-run owns: it
		// forwards the terminal, handles Ctrl-a and writes the console log.
		"-chardev", "stdio,id=console",
		"-serial", "chardev:console",
		"-qmp", "unix:" + opt(QMPSocket(vm)) + ",server=on,wait=off",
		// A panicking guest reports it (GUEST_PANICKED); QEMU then exits
		// non-zero, so a panic fails even a pasted --dry-run command.
		"-device", m.pvpanic,
		"-action", panicAction(vm),
		"-device", m.rng,
	}
	a = append(a, m.extra...)
	if vm.GDBPort != 0 {
		// Only on localhost: the stub gives full control of the guest.
		a = append(a, "-gdb", fmt.Sprintf("tcp:127.0.0.1:%d", vm.GDBPort))
		if vm.GDBWait {
			a = append(a, "-S")
		}
	}
	for i, s := range vm.Shares {
		id := fmt.Sprintf("fs%d", i)
		a = append(a,
			"-chardev", "socket,id="+id+",path="+opt(rundir.ShareSocket(vm.RunDir, i)),
			"-device", "vhost-user-fs-pci,queue-size=1024,chardev="+id+",tag="+opt(s.Tag))
	}
	if vm.Network.NAT() {
		netdev := "user,id=net0"
		if vm.Network.Mode == vmm.NetRestricted {
			// No packet from the guest leaves through the host, to it or
			// beyond; forwarded ports still reach the guest.
			netdev += ",restrict=on"
		}
		for _, f := range vm.Network.Forwards {
			// Forwarded ports listen on the host's loopback only.
			netdev += fmt.Sprintf(",hostfwd=%s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort)
		}
		// romfile= skips the NIC's boot ROM: direct kernel boot needs none.
		a = append(a, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=")
	}
	for i, v := range vm.Network.VLANs {
		// The LAN's switch (package vlan) listens; QEMU connects as a client.
		id := fmt.Sprintf("vlan%d", i)
		a = append(a,
			"-netdev", "stream,id="+id+",server=off,addr.type=unix,addr.path="+opt(v.Socket),
			"-device", "virtio-net-pci,netdev="+id+",mac="+v.MAC+",romfile=")
	}
	for i, d := range vm.Disks {
		id := fmt.Sprintf("disk%d", i)
		drive := "file=" + opt(d.Path) + ",format=" + d.Format + ",if=none,id=" + id
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		serial := id
		if d.Serial != "" {
			serial = opt(d.Serial)
		}
		a = append(a, "-drive", drive, "-device", "virtio-blk-pci,drive="+id+",serial="+serial)
	}
	if vm.Agent {
		// One port carries the agent's multiplexed protocol (docs/protocol.md).
		a = append(a, "-device", "virtio-serial-pci,id=ports",
			"-chardev", "socket,id=agent,path="+opt(AgentSocket(vm))+",server=on,wait=off",
			"-device", "virtserialport,bus=ports.0,chardev=agent,name="+vmm.AgentPortName+",id="+agentPortID)
	}
	if vm.Firmware != "" {
		a = append(a, "-bios", vm.Firmware)
	}
	a = append(a, "-kernel", bootKernel(vm))
	if vm.Initrd != "" {
		a = append(a, "-initrd", vm.Initrd)
	}
	params := MachineParams(vm.Arch)
	if vm.Arch == vmm.X86_64 && vm.Accel == vmm.AccelTCG {
		// Under TCG on a busy host the kernel's check that the IO-APIC
		// timer ticks can time out and panic ("IO-APIC + timer doesn't
		// work!"); the emulated timer is known good.
		params = append(params, "no_timer_check")
	}
	if vm.GDBPort != 0 {
		params = append(params, "nokaslr") // so gdb's symbols match the addresses
	}
	a = append(a, "-append", vm.CommandLine(params...))
	return append(a, vm.QEMUArgs...), nil
}

// panicAction: a panic ends QEMU at once, unless its memory is to be
// dumped first (--dump): then the guest is paused, dumped, and stopped.
func panicAction(vm *vmm.VM) string {
	if vm.DumpPath != "" {
		return "panic=pause"
	}
	return "panic=exit-failure"
}

// opt escapes a value inside a QEMU key=value option list, where a comma
// separates options and ",," stands for a literal comma.
func opt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// bootKernel is the file QEMU boots: what Resolve chose (VM.BootKernel), or
// the image itself.
func bootKernel(vm *vmm.VM) string {
	if vm.BootKernel == "" || vm.KernelAsIs {
		return vm.Kernel
	}
	return vm.BootKernel
}
