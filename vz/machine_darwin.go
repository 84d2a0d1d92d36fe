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

	"github.com/sonix-run/sonix-run/launcher"
)

// Start plans vm, writes what the plan needs (a decompressed kernel),
// applies the plan to a Virtualization.framework configuration and starts
// the VM.
func (b Backend) Start(ctx context.Context, vm *launcher.VM, console launcher.Console, log io.Writer) (launcher.Machine, error) {
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

func start(p *Plan, console launcher.Console) (_ launcher.Machine, err error) {
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
	// ours, read for how the guest ended (ending.go).
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

	cfg, keep, err := configure(p, in, outW)
	if err != nil {
		return nil, explain(err)
	}
	vm, err := avf.NewVirtualMachine(cfg)
	if err != nil {
		return nil, explain(fmt.Errorf("creating the VM: %w", err))
	}

	m := newMachine(vm)
	copyDone := make(chan struct{})
	go func() {
		defer close(copyDone)
		copyConsole(out, outR, m.watcher)
	}()
	if err := vm.Start(); err != nil {
		outW.Close()
		<-copyDone
		return nil, explain(fmt.Errorf("starting the VM: %w", err))
	}
	m.vzOut = outW
	m.copyDone = copyDone
	m.release = []io.Closer{outR, out, in}
	m.keep = append(keep, cfg, vm, in, out, outR, outW)
	go watchStates(m, vm.StateChangedNotify(), stateOf)
	return m, nil
}

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
func configure(p *Plan, consoleIn, consoleOut *os.File) (*avf.VirtualMachineConfiguration, []any, error) {
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

	if p.Network != "nat" {
		return nil, nil, fmt.Errorf("network %q: only nat is supported", p.Network)
	}
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

	if p.Entropy {
		rng, err := avf.NewVirtioEntropyDeviceConfiguration()
		if err != nil {
			return nil, nil, fmt.Errorf("entropy device: %w", err)
		}
		cfg.SetEntropyDevicesVirtualMachineConfiguration([]*avf.VirtioEntropyDeviceConfiguration{rng})
		keep = append(keep, rng)
	}
	if p.Vsock {
		sock, err := avf.NewVirtioSocketDeviceConfiguration()
		if err != nil {
			return nil, nil, fmt.Errorf("vsock device: %w", err)
		}
		cfg.SetSocketDevicesVirtualMachineConfiguration([]avf.SocketDeviceConfiguration{sock})
		keep = append(keep, sock)
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

// explain adds what to do to the framework's errors that have a known fix.
func explain(err error) error {
	switch {
	case errors.Is(err, avf.ErrUnsupportedOSVersion):
		return fmt.Errorf("%w: the vz backend needs macOS 12 or later (13 for --rosetta)", err)
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
