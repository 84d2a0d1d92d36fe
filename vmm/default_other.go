//go:build !darwin

package vmm

const defaultBackendName = "qemu"
