//go:build darwin && cgo && arm64

package vz

import (
	"errors"
	"fmt"

	avf "github.com/Code-Hex/vz/v3"
)

// rosettaDevice shares Rosetta for Linux under tag. NixOS's
// virtualisation.rosetta.enable mounts it and registers it with binfmt_misc.
func rosettaDevice(tag string) (*avf.VirtioFileSystemDeviceConfiguration, error) {
	switch avf.LinuxRosettaDirectoryShareAvailability() {
	case avf.LinuxRosettaAvailabilityNotSupported:
		return nil, errors.New("--rosetta: this Mac does not support Rosetta for Linux (it needs macOS 13 or later)")
	case avf.LinuxRosettaAvailabilityNotInstalled:
		return nil, errors.New("--rosetta: Rosetta is not installed; install it with `softwareupdate --install-rosetta --agree-to-license`")
	}
	share, err := avf.NewLinuxRosettaDirectoryShare()
	if err != nil {
		return nil, fmt.Errorf("--rosetta: %w", err)
	}
	dev, err := avf.NewVirtioFileSystemDeviceConfiguration(tag)
	if err != nil {
		return nil, fmt.Errorf("--rosetta: share tag %q: %w", tag, err)
	}
	dev.SetDirectoryShare(share)
	return dev, nil
}
