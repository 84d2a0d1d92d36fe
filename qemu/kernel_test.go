package qemu

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

const testRelease = "6.9.0-qemu-test"

// testVmlinux is an x86_64 ELF vmlinux as far as a loader and the kernel
// cache look: the ELF header, a PT_LOAD and a PT_NOTE program header, Xen
// notes (the PVH entry among them when pvh), the version banner and filler.
func testVmlinux(pvh bool) []byte {
	le := binary.LittleEndian
	var notes []byte
	note := func(typ uint32, desc []byte) {
		notes = le.AppendUint32(notes, 4) // "Xen\0"
		notes = le.AppendUint32(notes, uint32(len(desc)))
		notes = le.AppendUint32(notes, typ)
		notes = append(notes, "Xen\x00"...)
		notes = append(notes, desc...)
		for len(notes)%4 != 0 {
			notes = append(notes, 0)
		}
	}
	note(6, []byte("linux\x00")) // XEN_ELFNOTE_GUEST_OS
	if pvh {
		note(18, le.AppendUint32(nil, 0x1000850)) // XEN_ELFNOTE_PHYS32_ENTRY
	}
	const ehsize, phentsize = 64, 56
	noteOff := ehsize + 2*phentsize
	body := []byte("Linux version " + testRelease + " (builder@example.org) (gcc 13.2.0) #1 SMP\n")
	for i := 0; len(body) < 256<<10; i++ {
		body = append(body, fmt.Sprintf("code %d; ", i*7919%10007)...)
	}
	total := noteOff + len(notes) + len(body)
	h := make([]byte, ehsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le.PutUint16(h[16:], 2)    // ET_EXEC
	le.PutUint16(h[18:], 62)   // EM_X86_64
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], 0x1000000)
	le.PutUint64(h[32:], ehsize)
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phentsize)
	le.PutUint16(h[56:], 2)
	ph := func(typ uint32, off, size, align uint64) []byte {
		p := make([]byte, phentsize)
		le.PutUint32(p, typ)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], 0xffffffff81000000+off)
		le.PutUint64(p[24:], 0x1000000+off)
		le.PutUint64(p[32:], size)
		le.PutUint64(p[40:], size)
		le.PutUint64(p[48:], align)
		return p
	}
	out := append(h, ph(1, 0, uint64(total), 0x200000)...)
	out = append(out, ph(4, uint64(noteOff), uint64(len(notes)), 4)...)
	out = append(out, notes...)
	return append(out, body...)
}

// testBzImage wraps vmlinux, gzip'd, in a bzImage: boot sector and three
// setup sectors with the setup header (boot protocol 2.15, 64-bit, the
// release string), then the protected-mode code holding the payload.
func testBzImage(t *testing.T, vmlinux []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	zw.Write(vmlinux)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[0x1f1] = setupSects
	le.PutUint16(img[0x1fe:], 0xaa55)
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[0x206:], 0x020f)
	copy(img[0x400:], testRelease+" (builder@example.org) #1 SMP\x00")
	le.PutUint16(img[0x20e:], 0x400-0x200)
	img[0x236] = 1 // XLF_KERNEL_64
	le.PutUint32(img[0x248:], 0x100)
	le.PutUint32(img[0x24c:], uint32(z.Len()))
	img = append(img, bytes.Repeat([]byte{0x90}, 0x100)...) // the decompressor's code
	img = append(img, z.Bytes()...)
	return append(img, make([]byte, 64)...)
}

// recordingLog is a vmm.Log that keeps what it is told.
type recordingLog struct{ notices, details []string }

func (l *recordingLog) Notice(format string, args ...any) {
	l.notices = append(l.notices, fmt.Sprintf(format, args...))
}
func (l *recordingLog) Detail(format string, args ...any) {
	l.details = append(l.details, fmt.Sprintf(format, args...))
}

func (l *recordingLog) Output(string) io.Writer { return nil }

func (l *recordingLog) said(s string) bool {
	return strings.Contains(strings.Join(l.details, "\n"), s)
}

// kernelTest is a fresh user cache directory ($XDG_CACHE_HOME) and a
// kernel written into a temporary directory.
func kernelTest(t *testing.T, kernel []byte) (vm *vmm.VM, cacheDir string) {
	t.Helper()
	xdg := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", xdg)
	path := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(path, kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	vm = testVM()
	vm.Kernel = path
	return vm, filepath.Join(xdg, "sonix-run", "kernels")
}

func resolveOK(t *testing.T, vm *vmm.VM, mode vmm.Mode) *recordingLog {
	t.Helper()
	log := &recordingLog{}
	if err := resolveKernel(context.Background(), vm, mode, log); err != nil {
		t.Fatal(err)
	}
	if len(log.notices) != 0 {
		t.Errorf("notices %q: the kernel's choice is a detail (-v)", log.notices)
	}
	return log
}

func TestResolveKernelBootsPVH(t *testing.T) {
	elf := testVmlinux(true)
	vm, cacheDir := kernelTest(t, testBzImage(t, elf))

	log := resolveOK(t, vm, vmm.Boot)
	if !strings.HasPrefix(vm.BootKernel, cacheDir+"/") {
		t.Fatalf("BootKernel %q, want a file in %s; details %q", vm.BootKernel, cacheDir, log.details)
	}
	if got, _ := os.ReadFile(vm.BootKernel); !bytes.Equal(got, elf) {
		t.Fatalf("the booted kernel is not the bzImage's vmlinux (%d bytes)", len(got))
	}
	if !log.said("uncompressed through its PVH entry") || !log.said("extracted into the kernel cache") || !log.said("without KASLR") {
		t.Errorf("details %q", log.details)
	}
	argv, err := Argv(vm, "qemu")
	if err != nil {
		t.Fatal(err)
	}
	if got := pairs(argv, "-kernel"); len(got) != 1 || got[0] != vm.BootKernel {
		t.Errorf("-kernel %q, want %s", got, vm.BootKernel)
	}
	if !strings.HasSuffix(vm.Kernel, "/bzImage") {
		t.Errorf("Kernel changed to %s: it names the image, for messages", vm.Kernel)
	}

	// A second run finds it in the cache.
	first := vm.BootKernel
	vm2 := testVM()
	vm2.Kernel = vm.Kernel
	log = resolveOK(t, vm2, vmm.Boot)
	if vm2.BootKernel != first || !log.said("from the kernel cache") {
		t.Errorf("second run: BootKernel %q, details %q", vm2.BootKernel, log.details)
	}

	// --gdb boots with nokaslr anyway: no word about KASLR.
	vm2.GDBPort = 1234
	if log = resolveOK(t, vm2, vmm.Boot); log.said("KASLR") {
		t.Errorf("with --gdb: %q", log.details)
	}
}

func TestResolveKernelTruncatedCacheFile(t *testing.T) {
	elf := testVmlinux(true)
	vm, _ := kernelTest(t, testBzImage(t, elf))
	resolveOK(t, vm, vmm.Boot)
	cached := vm.BootKernel
	// Damage as a full disk or a killed copy would: the file is cut short.
	if err := os.Truncate(cached, int64(len(elf)/2)); err != nil {
		t.Fatal(err)
	}
	log := resolveOK(t, vm, vmm.Boot)
	if vm.BootKernel == "" {
		t.Fatalf("a truncated cache file made the run give up PVH: %q", log.details)
	}
	if got, _ := os.ReadFile(vm.BootKernel); !bytes.Equal(got, elf) {
		t.Fatalf("booting a damaged vmlinux (%d bytes, want %d)", len(got), len(elf))
	}
	if !log.said("extracted into the kernel cache") {
		t.Errorf("not re-extracted: %q", log.details)
	}
}

func TestResolveKernelWithoutPVHNote(t *testing.T) {
	vm, _ := kernelTest(t, testBzImage(t, testVmlinux(false)))
	for i := 0; i < 2; i++ { // the second run meets the remembered verdict
		log := resolveOK(t, vm, vmm.Boot)
		if vm.BootKernel != "" {
			t.Fatalf("run %d: BootKernel %q for a kernel without the PVH note", i, vm.BootKernel)
		}
		if !log.said("as it is, not through its PVH entry") || !log.said("no PVH entry note") {
			t.Errorf("run %d: details %q", i, log.details)
		}
		if argv, _ := Argv(vm, "qemu"); pairs(argv, "-kernel")[0] != vm.Kernel {
			t.Errorf("run %d: -kernel %q", i, pairs(argv, "-kernel"))
		}
	}
}

// Under KVM a run boots a vmlinux the cache holds but extracts none.
func TestResolveKernelKVMUsesOnlyTheCache(t *testing.T) {
	elf := testVmlinux(true)
	vm, cacheDir := kernelTest(t, testBzImage(t, elf))
	vm.Accel = vmm.AccelKVM
	log := resolveOK(t, vm, vmm.Boot)
	if vm.BootKernel != "" || !log.said("holds no vmlinux of it yet") || !log.said("under KVM") {
		t.Errorf("KVM, empty cache: BootKernel %q, details %q", vm.BootKernel, log.details)
	}
	if _, err := os.Stat(cacheDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a KVM run wrote the cache: %v", err)
	}
	if resolveOK(t, vm, vmm.DryRun); vm.BootKernel != vmm.CachedKernel {
		t.Errorf("KVM dry run: BootKernel %q, want %q", vm.BootKernel, vmm.CachedKernel)
	}
	tcg := testVM()
	tcg.Kernel = vm.Kernel
	resolveOK(t, tcg, vmm.Boot) // fills the cache
	log = resolveOK(t, vm, vmm.Boot)
	if vm.BootKernel != tcg.BootKernel || !log.said("from the kernel cache") {
		t.Errorf("KVM, filled cache: BootKernel %q (want %q), details %q", vm.BootKernel, tcg.BootKernel, log.details)
	}
	// A kernel a TCG run found without the note: that is the reason given.
	nopvh, _ := kernelTest(t, testBzImage(t, testVmlinux(false)))
	resolveOK(t, nopvh, vmm.Boot)
	nopvh.Accel = vmm.AccelKVM
	if log = resolveOK(t, nopvh, vmm.Boot); log.said("under KVM") || !log.said("no PVH entry note") {
		t.Errorf("KVM, no PVH note: %q", log.details)
	}
}

func TestResolveKernelAsIs(t *testing.T) {
	vm, cacheDir := kernelTest(t, testBzImage(t, testVmlinux(true)))
	vm.KernelAsIs = true
	vm.BootKernel = "/left/over/from/before"
	for _, mode := range []vmm.Mode{vmm.Boot, vmm.DryRun} {
		log := resolveOK(t, vm, mode)
		if vm.BootKernel != "" || !log.said("as it is (--kernel-format bzimage)") {
			t.Errorf("mode %d: BootKernel %q, details %q", mode, vm.BootKernel, log.details)
		}
	}
	if _, err := os.Stat(cacheDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--kernel-format bzimage touched the cache: %v", err)
	}
}

func TestResolveKernelDryRunChangesNothing(t *testing.T) {
	vm, cacheDir := kernelTest(t, testBzImage(t, testVmlinux(true)))
	resolveOK(t, vm, vmm.DryRun)
	if vm.BootKernel != vmm.ExtractedKernel {
		t.Errorf("BootKernel %q, want %q", vm.BootKernel, vmm.ExtractedKernel)
	}
	if _, err := os.Stat(cacheDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dry run wrote the cache: %v", err)
	}
	// An ELF boots as it is: the script needs no extraction step.
	elf, _ := kernelTest(t, testVmlinux(true))
	if resolveOK(t, elf, vmm.DryRun); elf.BootKernel != "" {
		t.Errorf("ELF: BootKernel %q", elf.BootKernel)
	}
}

func TestResolveKernelOtherKernels(t *testing.T) {
	// An ELF with the note is booted as it is, without a copy.
	vm, cacheDir := kernelTest(t, testVmlinux(true))
	if log := resolveOK(t, vm, vmm.Boot); vm.BootKernel != "" || !log.said("PVH entry note already") {
		t.Errorf("ELF: BootKernel %q, details %q", vm.BootKernel, log.details)
	}
	// aarch64 kernels are left alone.
	arm, _ := kernelTest(t, testBzImage(t, testVmlinux(true)))
	arm.Arch = vmm.AArch64
	if log := resolveOK(t, arm, vmm.Boot); arm.BootKernel != "" || len(log.details) != 0 {
		t.Errorf("aarch64: BootKernel %q, details %q", arm.BootKernel, log.details)
	}
	// Not a kernel at all: the reason is given, and QEMU will say more.
	junk, _ := kernelTest(t, []byte("#!/bin/sh\necho not a kernel\n"))
	if log := resolveOK(t, junk, vmm.Boot); junk.BootKernel != "" || !log.said("not a Linux kernel image") {
		t.Errorf("junk: BootKernel %q, details %q", junk.BootKernel, log.details)
	}
	if _, err := os.Stat(cacheDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cache was written for kernels that need no extraction: %v", err)
	}
}

func TestResolveKernelCancelled(t *testing.T) {
	vm, cacheDir := kernelTest(t, testBzImage(t, testVmlinux(true)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := resolveKernel(ctx, vm, vmm.Boot, &recordingLog{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	left, _ := filepath.Glob(filepath.Join(cacheDir, ".tmp-*"))
	if len(left) != 0 {
		t.Errorf("a cancelled extraction left %q", left)
	}
}

// Resolve itself, with QEMU installed: the kernel is resolved after the
// accelerator, and a dry run still extracts nothing.
func TestResolvePicksTheKernel(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed")
	}
	vm, _ := kernelTest(t, testBzImage(t, testVmlinux(true)))
	log := &recordingLog{}
	if err := (Backend{}).Resolve(context.Background(), vm, vmm.Boot, log); err != nil {
		t.Fatal(err)
	}
	if vm.BootKernel == "" || !log.said("PVH entry") {
		t.Errorf("BootKernel %q, details %q", vm.BootKernel, log.details)
	}
	procs, err := (Backend{}).Commands(vm)
	if err != nil {
		t.Fatal(err)
	}
	argv := procs[len(procs)-1].Argv
	if got := pairs(argv, "-kernel"); len(got) != 1 || got[0] != vm.BootKernel {
		t.Errorf("-kernel %q", got)
	}
}
