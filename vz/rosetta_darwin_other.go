//go:build darwin && cgo && !arm64

package vz

import (
	"errors"

	avf "github.com/Code-Hex/vz/v3"
)

// rosettaDevice fails: Rosetta for Linux exists only on Apple silicon, and
// vz declares its API only for darwin/arm64. NewPlan already refuses
// --rosetta on other hosts; this is the adapter's guard.
func rosettaDevice(tag string) (*avf.VirtioFileSystemDeviceConfiguration, error) {
	return nil, errors.New("--rosetta needs an Apple silicon Mac")
}
