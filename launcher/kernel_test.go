package launcher

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBzImage writes a file with an x86 setup header whose kernel_version
// field points at version.
func fakeBzImage(t *testing.T, version string) string {
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x300-0x200)
	copy(img[0x300:], version+"\x00")
	p := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKernelVersion(t *testing.T) {
	if got := KernelVersion(fakeBzImage(t, "6.12.0-rc1+ (me@box) #3 SMP")); got != "6.12.0-rc1+" {
		t.Errorf("got %q", got)
	}
	notImage := filepath.Join(t.TempDir(), "Image")
	os.WriteFile(notImage, make([]byte, 0x400), 0o644)
	if got := KernelVersion(notImage); got != "" {
		t.Errorf("an image without a setup header gave %q", got)
	}
	if got := KernelVersion("/does/not/exist"); got != "" {
		t.Errorf("a missing file gave %q", got)
	}
}

func TestModulesTreeAndWarning(t *testing.T) {
	root := t.TempDir() // an INSTALL_MOD_PATH root
	os.MkdirAll(filepath.Join(root, "lib", "modules", "6.12.0"), 0o755)
	tree := ModulesTree(root)
	if tree != filepath.Join(root, "lib", "modules") {
		t.Fatalf("ModulesTree(root) = %s", tree)
	}
	if ModulesTree(tree) != tree {
		t.Error("a lib/modules directory is not used as it is")
	}
	if w := modulesWarning(fakeBzImage(t, "6.12.0 #1"), tree); w != "" {
		t.Errorf("matching modules warned: %s", w)
	}
	if w := modulesWarning(fakeBzImage(t, "6.13.0 #1"), tree); !strings.Contains(w, "no 6.13.0/ for kernel 6.13.0 (it has: 6.12.0)") || strings.Contains(w, "\n") {
		t.Errorf("warning %q", w)
	}
	if w := modulesWarning(fakeBzImage(t, "6.13.0 #1"), ""); !strings.Contains(w, "no --modules shared") {
		t.Errorf("warning %q", w)
	}
}
