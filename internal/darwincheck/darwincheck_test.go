package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/sonix-run/sonix-run"

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return root
}

// TestModuleTypeChecksOnDarwin is the CI gate: the whole module, as a
// darwin build with cgo on sees it, type-checks on both Mac architectures,
// including the vz adapter and the right Rosetta file for each.
func TestModuleTypeChecksOnDarwin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list and type-checks the standard library")
	}
	root := moduleRoot(t)
	for _, tc := range []struct {
		arch    string
		rosetta string
	}{
		{"arm64", "rosetta_darwin_arm64.go"},
		{"amd64", "rosetta_darwin_other.go"},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			t.Parallel()
			res, err := Check(Options{Dir: root, GOARCH: tc.arch, Patterns: []string{"./..."}})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range res.Problems {
				t.Errorf("%s: %s", res.Target, p)
			}
			files := res.Files[modulePath+"/vz"]
			for _, want := range []string{"machine_darwin.go", "register_darwin.go", tc.rosetta, "plan.go"} {
				if !slices.Contains(files, want) {
					t.Errorf("vz was checked without %s (files: %v)", want, files)
				}
			}
			if slices.Contains(files, "stub.go") {
				t.Errorf("vz was checked with stub.go, as if cgo were off")
			}
			if res.Deps == 0 {
				t.Errorf("no dependencies were checked")
			}
		})
	}
}

// fixture type-checks a package that exists only in an overlay, inside the
// module (so it resolves vz through the module's own go.mod and go.sum),
// and returns the messages reported.
func fixture(t *testing.T, arch, src string) []string {
	t.Helper()
	root := moduleRoot(t)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "fixture.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory that does not exist in the tree: only the overlay has it.
	dir := filepath.Join(root, "internal", "darwincheck", "zz_overlay_fixture")
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists; the fixture must live only in the overlay", dir)
	}
	overlay := filepath.Join(tmp, "overlay.json")
	data, _ := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(dir, "fixture.go"): file}})
	if err := os.WriteFile(overlay, data, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Check(Options{Dir: root, GOARCH: arch, Patterns: []string{"./internal/darwincheck/zz_overlay_fixture"}, Overlay: overlay})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Checked, modulePath+"/internal/darwincheck/zz_overlay_fixture") {
		t.Fatalf("the fixture was not checked: %v", res.Checked)
	}
	var msgs []string
	for _, p := range res.Problems {
		msgs = append(msgs, p.String())
	}
	return msgs
}

func wantProblem(t *testing.T, msgs []string, want ...string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, m := range msgs {
			if strings.Contains(m, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem mentions %q; got:\n%s", w, strings.Join(msgs, "\n"))
		}
	}
}

// TestCatchesWrongVzCalls proves the check is not vacuous: wrong calls into
// vz, in a file built only for darwin with cgo, are reported.
func TestCatchesWrongVzCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list and type-checks the standard library")
	}
	const src = `//go:build darwin && cgo

package fixture

import (
	"os"

	vz "github.com/Code-Hex/vz/v3"
)

func wrong(vm *vz.VirtualMachine) error {
	_, err := vz.NewSharedDirectory("/nix/store")
	ok := vm.RequestStop()
	_ = ok
	_, _ = vz.NewFileHandleSerialPortAttachment(os.Stdin.Fd(), os.Stdout)
	return err
}
`
	for _, arch := range []string{"arm64", "amd64"} {
		t.Run(arch, func(t *testing.T) {
			t.Parallel()
			msgs := fixture(t, arch, src)
			wantProblem(t, msgs,
				"not enough arguments in call to vz.NewSharedDirectory",
				"vm.RequestStop returns 2 values",
				"cannot use os.Stdin.Fd()",
			)
			for _, m := range msgs {
				if !strings.Contains(m, "zz_overlay_fixture") {
					t.Errorf("problem outside the fixture: %s", m)
				}
			}
		})
	}
}

// TestCatchesArchOnlyAPI: Rosetta exists in vz only on arm64, so an
// untagged use of it is an error on amd64 and fine on arm64.
func TestCatchesArchOnlyAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list and type-checks the standard library")
	}
	const src = `//go:build darwin && cgo

package fixture

import vz "github.com/Code-Hex/vz/v3"

func rosetta() (*vz.LinuxRosettaDirectoryShare, error) { return vz.NewLinuxRosettaDirectoryShare() }
`
	if msgs := fixture(t, "arm64", src); len(msgs) != 0 {
		t.Errorf("arm64: unexpected problems:\n%s", strings.Join(msgs, "\n"))
	}
	wantProblem(t, fixture(t, "amd64", src), "undefined: vz.LinuxRosettaDirectoryShare")
}
