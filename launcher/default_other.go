//go:build !darwin

package launcher

const defaultBackendName = "qemu"
