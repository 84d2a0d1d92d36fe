//go:build darwin

package vz

import "github.com/sonix-run/sonix-run/vmm"

// On macOS the backend is registered with or without cgo: a build without
// cgo then says at Start how to get a working one, rather than claiming that
// vz does not exist.
func init() { vmm.Register(Backend{}) }
