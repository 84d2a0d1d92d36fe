//go:build darwin && cgo

package vz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	avf "github.com/Code-Hex/vz/v3"

	"github.com/sonix-run/sonix-run/vmm"
)

// Start plans vm, writes what the plan needs (a decompressed kernel),
// applies the plan to a Virtualization.framework configuration and starts
// the VM.
func (b Backend) Start(ctx context.Context, vm *vmm.VM, console vmm.Console, log vmm.Log) (vmm.Machine, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := NewPlan(vm, b.options(vm))
	if err != nil {
		return nil, err
	}
	if err := p.Prepare(); err != nil {
		return nil, err
	}
	return start(p, console)
}

// hostLimits asks the framework for its CPU and memory bounds.
func hostLimits() Limits {
	return Limits{
		MinCPUs:   avf.VirtualMachineConfigurationMinimumAllowedCPUCount(),
		MaxCPUs:   avf.VirtualMachineConfigurationMaximumAllowedCPUCount(),
		MinMemory: avf.VirtualMachineConfigurationMinimumAllowedMemorySize(),
		MaxMemory: avf.VirtualMachineConfigurationMaximumAllowedMemorySize(),
	}
}

func start(p *Plan, console vmm.Console) (_ vmm.Machine, err error) {
	var closers []io.Closer
	defer func() {
		if err != nil {
			for _, c := range closers {
				c.Close()
			}
		}
	}()

	// The launcher closes its copies of the console ends once Start returns,
	// and v3.7.1 hands the framework bare descriptors: the framework gets
	// duplicates that the machine owns. Its output goes through a pipe of
	// ours, read for how the guest ended (ending.go) and ended with a bound
	// (console.go).
	in, err := dupFile(console.In, "vz-console-in")
	if err != nil {
		return nil, err
	}
	closers = append(closers, in)
	out, err := dupFile(console.Out, "vz-console-out")
	if err != nil {
		return nil, err
	}
	closers = append(closers, out)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	closers = append(closers, outR, outW)
	var agent *agentPort
	var agentGuest *os.File
	if p.AgentPort != "" {
		if agent, err = newAgentPort(); err != nil {
			return nil, err
		}
		closers = append(closers, closerFunc(agent.end))
		agentGuest = agent.guest
	}

	cfg, keep, err := configure(p, in, outW, agentGuest)
	if err != nil {
		return nil, explain(err)
	}
	vm, err := avf.NewVirtualMachine(cfg)
	if err != nil {
		return nil, explain(fmt.Errorf("creating the VM: %w", err))
	}

	m := newMachine(vm)
	m.console = startConsoleCopy(out, outR, outW, m.watcher)
	if err := vm.Start(); err != nil {
		// The copy is ended with the same bound as at a normal end: the
		// framework may hold a copy of outW even though the VM never ran.
		m.console.end()
		return nil, explain(fmt.Errorf("starting the VM: %w", err))
	}
	if agent != nil {
		m.agent = agent
	}
	m.release = []io.Closer{outR, out, in}
	m.keep = append(keep, cfg, vm, in, out, outR, outW, agentGuest)
	go watchStates(m, vm.StateChangedNotify(), stateOf)
	return m, nil
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

func stateOf(s avf.VirtualMachineState) vmState {
	switch s {
	case avf.VirtualMachineStateStopped:
		return stateStopped
	case avf.VirtualMachineStateError:
		return stateError
	}
	return stateOther
}

// configure applies p to a new configuration and validates it. It returns
// the objects the configuration refers to, to be kept for the VM's life.
// agent is the guest's end of the agent port's socket pair (nil without
// p.AgentPort).
func configure(p *Plan, consoleIn, consoleOut, agent *os.File) (*avf.VirtualMachineConfiguration, []any, error) {
	var keep []any

	bootOpts := []avf.LinuxBootLoaderOption{avf.WithCommandLine(p.CommandLine)}
	if p.Initrd != "" {
		bootOpts = append(bootOpts, avf.WithInitrd(p.Initrd))
	}
	boot, err := avf.NewLinuxBootLoader(p.Kernel, bootOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("linux boot loader: %w", err)
	}
	cfg, err := avf.NewVirtualMachineConfiguration(boot, p.CPUs, p.MemoryBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("VM configuration: %w", err)
	}
	keep = append(keep, boot)

	// The virtio console: the guest reads consoleIn and writes consoleOut.
	attachment, err := avf.NewFileHandleSerialPortAttachment(consoleIn, consoleOut)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	serial, err := avf.NewVirtioConsoleDeviceSerialPortConfiguration(attachment)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	cfg.SetSerialPortsVirtualMachineConfiguration([]*avf.VirtioConsoleDeviceSerialPortConfiguration{serial})
	keep = append(keep, attachment, serial)

	// The agent port: a console device of its own with one named port that
	// is not a console, so the guest's hvc0 stays the console above. The
	// socket end is both the port's input and its output. macOS 13 or later.
	if p.AgentPort != "" {
		att, err := avf.NewFileHandleSerialPortAttachment(agent, agent)
		if err != nil {
			return nil, nil, fmt.Errorf("agent port: %w", err)
		}
		port, err := avf.NewVirtioConsolePortConfiguration(
			avf.WithVirtioConsolePortConfigurationName(p.AgentPort),
			avf.WithVirtioConsolePortConfigurationIsConsole(false),
			avf.WithVirtioConsolePortConfigurationAttachment(att),
		)
		if err != nil {
			return nil, nil, fmt.Errorf("agent port: %w", err)
		}
		dev, err := avf.NewVirtioConsoleDeviceConfiguration()
		if err != nil {
			return nil, nil, fmt.Errorf("agent port: %w", err)
		}
		dev.SetVirtioConsolePortConfiguration(0, port)
		cfg.SetConsoleDevicesVirtualMachineConfiguration([]avf.ConsoleDeviceConfiguration{dev})
		keep = append(keep, att, port, dev)
	}

	// One virtio-fs device per share, then Rosetta's.
	var fsDevs []avf.DirectorySharingDeviceConfiguration
	for _, s := range p.Shares {
		dir, err := avf.NewSharedDirectory(s.HostDir, s.ReadOnly)
		if err != nil {
			return nil, nil, fmt.Errorf("share %q (%s): %w", s.Tag, s.HostDir, err)
		}
		share, err := avf.NewSingleDirectoryShare(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("share %q (%s): %w", s.Tag, s.HostDir, err)
		}
		dev, err := avf.NewVirtioFileSystemDeviceConfiguration(s.Tag)
		if err != nil {
			return nil, nil, fmt.Errorf("share %q (%s): %w", s.Tag, s.HostDir, err)
		}
		dev.SetDirectoryShare(share)
		fsDevs = append(fsDevs, dev)
		keep = append(keep, dir, share)
	}
	if p.RosettaTag != "" {
		dev, err := rosettaDevice(p.RosettaTag)
		if err != nil {
			return nil, nil, err
		}
		fsDevs = append(fsDevs, dev)
	}
	cfg.SetDirectorySharingDevicesVirtualMachineConfiguration(fsDevs)
	keep = append(keep, fsDevs)

	disks, err := diskDevices(p.Disks)
	if err != nil {
		return nil, nil, err
	}
	if len(disks) > 0 {
		cfg.SetStorageDevicesVirtualMachineConfiguration(disks)
		keep = append(keep, disks)
	}

	switch p.Network {
	case "":
		// --net none: no card at all.
	case NetworkNAT:
		nat, err := avf.NewNATNetworkDeviceAttachment()
		if err != nil {
			return nil, nil, fmt.Errorf("network: %w", err)
		}
		nic, err := avf.NewVirtioNetworkDeviceConfiguration(nat)
		if err != nil {
			return nil, nil, fmt.Errorf("network: %w", err)
		}
		mac, err := avf.NewMACAddress(p.MAC)
		if err != nil {
			return nil, nil, fmt.Errorf("network: MAC address %s: %w", p.MAC, err)
		}
		nic.SetMACAddress(mac)
		cfg.SetNetworkDevicesVirtualMachineConfiguration([]*avf.VirtioNetworkDeviceConfiguration{nic})
		keep = append(keep, nat, nic, mac)
	default:
		return nil, nil, fmt.Errorf("network %q: only %s or none", p.Network, NetworkNAT)
	}

	if p.Entropy {
		rng, err := avf.NewVirtioEntropyDeviceConfiguration()
		if err != nil {
			return nil, nil, fmt.Errorf("entropy device: %w", err)
		}
		cfg.SetEntropyDevicesVirtualMachineConfiguration([]*avf.VirtioEntropyDeviceConfiguration{rng})
		keep = append(keep, rng)
	}
	ok, err := cfg.Validate()
	if err != nil {
		return nil, nil, fmt.Errorf("invalid VM configuration: %w", err)
	}
	if !ok {
		return nil, nil, errors.New("invalid VM configuration")
	}
	return cfg, keep, nil
}

// diskDevices makes one virtio block device per disk. Each attachment
// caches host I/O and fully syncs guest flushes: the framework's default
// (automatic, which is uncached on local storage) has corrupted Linux
// guests' ext4 and btrfs (lima PR #2026, UTM PR #5919, vfkit PR #76, which
// all moved to cached), and full synchronization (F_FULLFSYNC) makes a
// guest's flush reach the disk, not just the drive's cache, so what the
// guest synced survives a host crash. Both need macOS 12, as the vz backend
// does anyway.
func diskDevices(disks []Disk) ([]avf.StorageDeviceConfiguration, error) {
	var devs []avf.StorageDeviceConfiguration
	for _, d := range disks {
		att, err := avf.NewDiskImageStorageDeviceAttachmentWithCacheAndSync(d.Path, d.ReadOnly,
			avf.DiskImageCachingModeCached, avf.DiskImageSynchronizationModeFull)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Path, err)
		}
		dev, err := avf.NewVirtioBlockDeviceConfiguration(att)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Path, err)
		}
		// The identifier is how the guest finds the disk (by-id names, the
		// --state disk's sonix-state), so an older macOS is refused rather
		// than given an anonymous disk.
		if err := dev.SetBlockDeviceIdentifier(d.Identifier); err != nil {
			if errors.Is(err, avf.ErrUnsupportedOSVersion) {
				return nil, fmt.Errorf("disk %s: its identifier %q (the guest's /dev/disk/by-id/virtio-%s) needs macOS 12.3 or later: %w", d.Path, d.Identifier, d.Identifier, err)
			}
			return nil, fmt.Errorf("disk %s: identifier %q: %w", d.Path, d.Identifier, err)
		}
		devs = append(devs, dev)
	}
	return devs, nil
}

// explain adds what to do to the framework's errors that have a known fix.
func explain(err error) error {
	switch {
	case errors.Is(err, avf.ErrUnsupportedOSVersion):
		return fmt.Errorf("%w: the vz backend needs macOS 12 or later (12.3 for --disk and --state, whose disks carry identifiers; 13 for --rosetta, and for --run and the harness, whose agent port is a named virtio console port)", err)
	case errors.Is(err, avf.ErrBuildTargetOSVersion):
		return fmt.Errorf("%w: rebuild sonix-run against a newer macOS SDK", err)
	case strings.Contains(err.Error(), "com.apple.security.virtualization"):
		return fmt.Errorf("%w: sign the binary with vz/vz.entitlements (make sign-darwin, or see docs/macos.md)", err)
	}
	return err
}

// dupFile returns a new *os.File on a duplicate of f's descriptor, which the
// caller owns and must keep referenced while anything uses its descriptor.
func dupFile(f *os.File, name string) (*os.File, error) {
	if f == nil {
		return nil, fmt.Errorf("%s: no file", name)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) {
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		if fd, dupErr = syscall.Dup(int(s)); dupErr == nil {
			syscall.CloseOnExec(fd)
		}
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("%s: dup: %w", name, dupErr)
	}
	return os.NewFile(uintptr(fd), name), nil
}
