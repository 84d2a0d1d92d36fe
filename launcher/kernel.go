package launcher

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sonix-run/sonix-run/bootjson"
)

// overrideKernel applies --kernel and --initrd, which replace boot.json's.
func overrideKernel(cfg *Config, paths bootjson.HostPaths) (bootjson.HostPaths, error) {
	for _, o := range []struct {
		flag, value string
		dest        *string
	}{{"--kernel", cfg.Kernel, &paths.Kernel}, {"--initrd", cfg.Initrd, &paths.Initrd}} {
		if o.value == "" {
			continue
		}
		st, err := os.Stat(o.value)
		if err != nil {
			return paths, fmt.Errorf("%s %s: %w", o.flag, o.value, err)
		}
		if !st.Mode().IsRegular() {
			return paths, fmt.Errorf("%s %s: not a regular file", o.flag, o.value)
		}
		abs, err := filepath.Abs(o.value)
		if err != nil {
			return paths, err
		}
		*o.dest = abs
	}
	return paths, nil
}

// ModulesTree returns the /lib/modules directory inside dir: dir itself, or
// dir/lib/modules when dir is an INSTALL_MOD_PATH root (what
// `make modules_install INSTALL_MOD_PATH=dir` writes).
func ModulesTree(dir string) string {
	inner := filepath.Join(dir, "lib", "modules")
	if st, err := os.Stat(inner); err == nil && st.IsDir() {
		return inner
	}
	return dir
}

// KernelVersion reads the release string (what `uname -r` prints) from an
// x86 bzImage's setup header; "" when the image is not one, or has none.
func KernelVersion(image string) string {
	f, err := os.Open(image)
	if err != nil {
		return ""
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil || string(hdr[0x202:0x206]) != "HdrS" {
		return ""
	}
	// kernel_version: offset of the version string, minus 0x200.
	off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
	if off == 0x200 {
		return ""
	}
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, off)
	s := string(buf[:n])
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	release, _, _ := strings.Cut(s, " ")
	return release
}

// modulesWarning says, in one line, when the booted kernel will find no
// modules of its own version in what is shared; "" when all is well or the
// version cannot be read.
func modulesWarning(kernel, modules string) string {
	release := KernelVersion(kernel)
	if release == "" {
		return ""
	}
	if modules == "" {
		return fmt.Sprintf("sonix-run: warning: no --modules shared; kernel %s will find no modules outside its initrd", release)
	}
	if st, err := os.Stat(filepath.Join(modules, release)); err == nil && st.IsDir() {
		return ""
	}
	var have []string
	entries, _ := os.ReadDir(modules)
	for _, e := range entries {
		if e.IsDir() {
			have = append(have, e.Name())
		}
	}
	sort.Strings(have)
	return fmt.Sprintf("sonix-run: warning: --modules %s has no %s/ for kernel %s (it has: %s)", modules, release, release, orNone(have))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
