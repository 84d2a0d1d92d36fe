//go:build darwin

package vmm

const defaultBackendName = "vz"
