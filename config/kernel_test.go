package config

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

// fakeBzImage writes a bzImage as far as its headers go: the boot sector's
// flag, the setup header (boot protocol 2.15, 64-bit) with kernel_version
// pointing at version, and a gzip payload's first bytes.
func fakeBzImage(t *testing.T, version string) string {
	img := make([]byte, 0x900)
	img[0x1f1] = 3 // setup sectors: protected-mode code at 0x800
	binary.LittleEndian.PutUint16(img[0x1fe:], 0xaa55)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(img[0x20e:], 0x300-0x200)
	img[0x236] = 1 // XLF_KERNEL_64
	binary.LittleEndian.PutUint32(img[0x24c:], 0x40)
	copy(img[0x300:], version+"\x00")
	copy(img[0x800:], "\x1f\x8b\x08\x00")
	p := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckKernelImage(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	arm := make([]byte, 0x400)
	copy(arm[0x38:], "ARM\x64")
	armImage := write("Image", arm)
	bz := fakeBzImage(t, "6.12.0 #1")
	text := write("notes.txt", []byte("this is a text file, not a kernel\n"))
	for _, tc := range []struct {
		path string
		arch vmm.Arch
		want string // "" for accepted
	}{
		{bz, vmm.X86_64, ""},
		{armImage, vmm.AArch64, ""},
		{text, vmm.X86_64, "--kernel " + text + ": not an x86_64 kernel image (expected a bzImage"},
		{text, vmm.AArch64, "--kernel " + text + ": not an aarch64 kernel image"},
		{armImage, vmm.X86_64, "not an x86_64 kernel image (expected a bzImage, e.g. arch/x86/boot/bzImage, or a vmlinux ELF); it is an Image for aarch64"},
		{bz, vmm.AArch64, "not an aarch64 kernel image (expected arch/arm64/boot/Image, Image.gz or an EFI zboot vmlinuz.efi); it is a bzImage for x86_64"},
		{filepath.Join(dir, "missing"), vmm.X86_64, "--kernel " + filepath.Join(dir, "missing") + ": no such file or directory"},
	} {
		err := checkKernelImage("--kernel", tc.path, tc.arch)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s for %s: %v", tc.path, tc.arch, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s for %s: got %v, want %q", tc.path, tc.arch, err, tc.want)
		}
	}
}

func TestKernelVersion(t *testing.T) {
	if got := kernelVersion(fakeBzImage(t, "6.12.0-rc1+ (me@box) #3 SMP")); got != "6.12.0-rc1+" {
		t.Errorf("got %q", got)
	}
	notImage := filepath.Join(t.TempDir(), "Image")
	os.WriteFile(notImage, make([]byte, 0x400), 0o644)
	if got := kernelVersion(notImage); got != "" {
		t.Errorf("an image without a setup header gave %q", got)
	}
	if got := kernelVersion("/does/not/exist"); got != "" {
		t.Errorf("a missing file gave %q", got)
	}
}

func TestModulesTreeAndWarning(t *testing.T) {
	root := t.TempDir() // an INSTALL_MOD_PATH root
	os.MkdirAll(filepath.Join(root, "lib", "modules", "6.12.0"), 0o755)
	tree := modulesTree(root)
	if tree != filepath.Join(root, "lib", "modules") {
		t.Fatalf("modulesTree(root) = %s", tree)
	}
	if modulesTree(tree) != tree {
		t.Error("a lib/modules directory is not used as it is")
	}
	if w := modulesWarning(fakeBzImage(t, "6.12.0 #1"), tree, true); w != "" {
		t.Errorf("matching modules warned: %s", w)
	}
	if w := modulesWarning(fakeBzImage(t, "6.13.0 #1"), tree, true); !strings.Contains(w, "no 6.13.0/ for kernel 6.13.0 (it has: 6.12.0)") || strings.Contains(w, "\n") {
		t.Errorf("warning %q", w)
	}
	if w := modulesWarning(fakeBzImage(t, "6.13.0 #1"), "", true); !strings.Contains(w, "no --modules shared") {
		t.Errorf("warning %q", w)
	}
}
