package kconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Kernel is what is known of a kernel's configuration, from one source.
type Kernel struct {
	// Source says where it was read, for the report: "its embedded config",
	// a config file's path, or a modules tree's.
	Source string
	// Config is the full configuration; nil when only the module lists are
	// known.
	Config Config
	// Builtin and Modular are module names (as modules.builtin and
	// modules.order list them, '-' as '_'): the drivers built in, and those
	// built as modules.
	Builtin, Modular map[string]bool
}

// FromImage reads the configuration embedded in an uncompressed kernel image
// (see EmbeddedConfig); ErrNoEmbeddedConfig when it has none.
func FromImage(image []byte) (*Kernel, error) {
	data, err := EmbeddedConfig(image)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("embedded config: %w", err)
	}
	return &Kernel{Source: "its embedded config", Config: c}, nil
}

// FromConfigFile reads a kernel's .config, or the config-RELEASE file
// distributions install beside the kernel.
func FromConfigFile(name string) (*Kernel, error) {
	data, err := readBounded(name)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Kernel{Source: name, Config: c}, nil
}

// FromModulesTree reads dir's modules.builtin and modules.order; dir is
// lib/modules/RELEASE of the kernel (what make modules_install writes).
// Either file may be missing, not both.
func FromModulesTree(dir string) (*Kernel, error) {
	k := &Kernel{Source: dir}
	var found int
	for _, f := range []struct {
		name string
		dst  *map[string]bool
	}{{"modules.builtin", &k.Builtin}, {"modules.order", &k.Modular}} {
		data, err := readBounded(filepath.Join(dir, f.name))
		if errors.Is(err, fs.ErrNotExist) {
			*f.dst = map[string]bool{}
			continue
		}
		if err != nil {
			return nil, err
		}
		found++
		names, err := moduleList(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, f.name), err)
		}
		*f.dst = names
	}
	if found == 0 {
		return nil, fmt.Errorf("kconfig: %s has neither modules.builtin nor modules.order (want a lib/modules/RELEASE directory from make modules_install)", dir)
	}
	return k, nil
}

// readBounded reads a file that should be a kernel config or module list,
// refusing one too large to be either.
func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("kconfig: %s is not a regular file", name)
	}
	if st.Size() > maxConfigSize {
		return nil, fmt.Errorf("kconfig: %s is %d bytes, more than a kernel config or module list can be", name, st.Size())
	}
	data := make([]byte, st.Size())
	n, err := f.ReadAt(data, 0)
	if n == len(data) {
		err = nil
	}
	return data[:n], err
}

// moduleList parses modules.builtin or modules.order: one module path a
// line (kernel/drivers/virtio/virtio_pci.ko; newer kernels' build trees
// write .o), giving the set of module names.
func moduleList(data []byte) (map[string]bool, error) {
	names := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name := moduleName(line)
		if name == "" || !validName(strings.ReplaceAll(name, "-", "_")) {
			return nil, fmt.Errorf("line %d: %q is not a module path", i+1, clip(line))
		}
		names[name] = true
	}
	return names, nil
}

// moduleName is the canonical name of a module path: the base name without
// .ko (and a compression suffix) or .o, '-' replaced by '_'.
func moduleName(p string) string {
	base := path.Base(p)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko", ".o"} {
		if b, ok := strings.CutSuffix(base, ext); ok {
			return strings.ReplaceAll(b, "-", "_")
		}
	}
	return ""
}
