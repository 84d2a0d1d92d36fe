// Package vz is sonix-run's macOS backend: it boots a vmm.VM on
// Apple's Virtualization.framework through github.com/Code-Hex/vz/v3.
//
// The package has two layers, so that most of it is built and tested on any
// OS:
//
//   - A portable plan (plan.go, kernel.go): NewPlan translates a
//     vmm.VM into a Plan, a plain value holding every setting the
//     framework gets: the kernel to boot (an arm64 Image is decompressed into
//     the run directory when it is gzip'd or an EFI zboot image), the initrd,
//     the kernel command line, CPUs and memory in bytes, one virtio-fs
//     device per share, the virtio console, the guest agent's named console
//     port, NAT networking with a stable MAC (or none), an entropy device
//     and the Rosetta share. The machine's lifecycle (machine.go) is
//     portable too, written against a small interface the framework's VM
//     satisfies, and so are the reading of the console for how the guest
//     ended (ending.go), the bounded end of the console copy (console.go)
//     and the agent port's socket pair (agent_unix.go).
//   - A thin darwin adapter (machine_darwin.go, rosetta_darwin_*.go,
//     built only with `darwin && cgo`) that applies a Plan with the vz API
//     and connects the framework's state channel to the machine.
//
// Builds without the adapter (other OSes, or macOS with CGO_ENABLED=0) still
// compile the Backend type; on macOS without cgo Start explains how to
// rebuild, and on other OSes the backend is not registered at all, so
// `--backend vz` reports that it is not available in this build.
//
// The binary must be signed with the com.apple.security.virtualization
// entitlement (vz/vz.entitlements; `make sign-darwin`), or the framework
// refuses every configuration. docs/macos.md has the whole macOS path.
package vz
