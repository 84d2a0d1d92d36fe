// Package nixbuild turns a Nix installable into a built NixOS system, so that
// sonix-run can be given what to build instead of what was built:
//
//	sonix-run .#vm                     a flake's nixosConfigurations.vm
//	sonix-run github:o/r#vm            the same, from a remote flake
//	sonix-run ./vm.nix                 a Nix file that evaluates to a toplevel
//
// Build runs nix and returns the toplevel's store path, which holds the
// boot.json that the launcher boots.
//
// # What counts as an installable
//
// IsInstallable decides, without running nix:
//
//   - a path that exists and is not a .nix file (a boot.json, a toplevel
//     directory, ./result) is never an installable: it is booted as it is;
//   - a ref#attr form (anything with '#', e.g. .#vm, github:o/r#vm,
//     /src/flake#nixosConfigurations.vm) is a flake output;
//   - a name ending in .nix (that is not a directory) is a Nix file;
//   - a flake reference URL without an attribute (github:o/r, path:/src,
//     git+https://…) is a flake's default package;
//   - a store derivation with outputs (/nix/store/…drv^out) is built as is.
//
// # How a flake attribute is read
//
// A bare attribute names a NixOS configuration: .#vm means
// .#nixosConfigurations.vm.config.system.build.toplevel, and
// .#nixosConfigurations.vm is completed the same way. Any other attribute
// path (two or more components, e.g. .#packages.x86_64-linux.vm-toplevel or
// the full ...config.system.build.toplevel) is passed to nix unchanged, so
// that is how to name a toplevel exposed elsewhere. Unlike `nix build .#x`,
// a bare name is not looked up under packages.<system>.
//
// # How a Nix file is built
//
// FILE.nix is built with `nix build --file FILE.nix`: the file must evaluate
// to the toplevel derivation itself (or a function with defaulted arguments
// returning it), for example
//
//	(import <nixpkgs/nixos> { configuration = ./configuration.nix; }).config.system.build.toplevel
package nixbuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
)

// ErrNoNix is matched (errors.Is) by the error Build returns when there is no
// nix on $PATH.
var ErrNoNix = errors.New("nix is not installed")

type noNixError struct{ target string }

func (e *noNixError) Error() string {
	return fmt.Sprintf("%s looks like a Nix installable, but nix is not installed; build it yourself and pass ./result", e.target)
}

func (e *noNixError) Is(target error) bool { return target == ErrNoNix }

// flakeURL matches the flake reference forms that need no '#': a URL scheme
// that names a flake source.
var flakeURL = regexp.MustCompile(`^(github|gitlab|sourcehut|git|path|flake|tarball|file|http|https|git\+[a-z]+|hg\+[a-z]+|tarball\+[a-z]+|file\+[a-z]+):.`)

// IsInstallable reports whether target names something nix has to build
// before it can be booted, rather than a built system on disk. The package
// documentation lists the rules.
func IsInstallable(target string) bool {
	if target == "" {
		return false
	}
	st, statErr := os.Stat(target)
	exists := statErr == nil
	if isNixFile(target) {
		return !exists || !st.IsDir()
	}
	if exists {
		return false // a boot.json, a toplevel, ./result, or a file with an odd name
	}
	if _, err := os.Lstat(target); err == nil {
		return false // a dangling link, e.g. an old ./result: the launcher explains
	}
	switch {
	case strings.Contains(target, "#"):
		return true
	case flakeURL.MatchString(target):
		return true
	case strings.Contains(target, ".drv^"):
		return true
	}
	return false
}

// Installable returns what Build asks nix for: a bare flake attribute
// (.#vm) or a nixosConfigurations entry (.#nixosConfigurations.vm) is
// completed to that configuration's config.system.build.toplevel; everything
// else is returned unchanged.
func Installable(target string) string {
	if isNixFile(target) {
		return target
	}
	ref, attr, ok := strings.Cut(target, "#")
	if !ok || attr == "" || strings.Contains(attr, "^") {
		return target
	}
	parts := splitAttrPath(attr)
	const toplevel = ".config.system.build.toplevel"
	switch {
	case len(parts) == 1:
		return ref + "#nixosConfigurations." + attr + toplevel
	case len(parts) == 2 && parts[0] == "nixosConfigurations":
		return ref + "#" + attr + toplevel
	}
	return target
}

// Command returns the command line Build runs for target, nix first; the
// launcher's --dry-run can print it.
func Command(target string) []string {
	argv := []string{"nix", "--extra-experimental-features", "nix-command flakes",
		"build", "--no-link", "--json"}
	if isNixFile(target) {
		return append(argv, "--file", target)
	}
	return append(argv, Installable(target))
}

// Check says whether target can be built here: an error (ErrNoNix) when
// nix is not installed, so that this is said before anything else about
// the run is looked at.
func Check(target string) error {
	if _, err := exec.LookPath("nix"); err != nil {
		return &noNixError{target: target}
	}
	return nil
}

// Build builds target with nix and returns the store path of the system it
// names (the toplevel holding boot.json). nix's progress and errors go to
// stderr (nil discards them); cancelling ctx stops nix.
//
// It runs `nix build --no-link --json` rather than --print-out-paths, which
// Nix 2.8 (Debian 12's) does not know; the JSON names the same store path.
func Build(ctx context.Context, target string, stderr io.Writer) (toplevel string, err error) {
	argv := Command(target)
	nix, err := exec.LookPath(argv[0])
	if err != nil {
		return "", &noNixError{target: target}
	}
	if stderr == nil {
		stderr = io.Discard
	}
	var stdout bytes.Buffer
	cmd := exec.Command(nix, argv[1:]...)
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	// Started like every other child (it cannot outlive sonix-run); a
	// cancelled build gets Ctrl-C's SIGINT first, as at a terminal.
	if err := proc.Run(ctx, cmd, stopGrace); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("building %s: %w", target, ctx.Err())
		}
		return "", fmt.Errorf("building %s: nix build failed: %w", target, err)
	}
	return parseBuildJSON(target, stdout.Bytes())
}

// stopGrace is how long a cancelled nix may take to stop its builds.
const stopGrace = 5 * time.Second

// buildResult is one element of `nix build --json`'s output: a built
// derivation with its outputs, or a store path that needed no build.
type buildResult struct {
	DrvPath string            `json:"drvPath"`
	Outputs map[string]string `json:"outputs"`
	Path    string            `json:"path"`
}

func parseBuildJSON(target string, out []byte) (string, error) {
	var results []buildResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &results); err != nil {
		return "", fmt.Errorf("building %s: cannot read nix build --json output: %v", target, err)
	}
	var paths []string
	for _, r := range results {
		switch {
		case r.Path != "":
			paths = append(paths, r.Path)
		case r.Outputs["out"] != "":
			paths = append(paths, r.Outputs["out"])
		case len(r.Outputs) == 1:
			for _, p := range r.Outputs {
				paths = append(paths, p)
			}
		case len(r.Outputs) > 1:
			var names []string
			for n := range r.Outputs {
				names = append(names, n)
			}
			sort.Strings(names)
			return "", fmt.Errorf("building %s: %s has the outputs %s and no \"out\"; name the one to boot (%s^NAME)",
				target, r.DrvPath, strings.Join(names, ", "), target)
		}
	}
	switch len(paths) {
	case 0:
		return "", fmt.Errorf("building %s: nix reported no output path", target)
	case 1:
		return paths[0], nil
	}
	return "", fmt.Errorf("building %s: it names %d systems (%s); name one", target, len(paths), strings.Join(paths, ", "))
}

func isNixFile(target string) bool {
	return strings.HasSuffix(target, ".nix") && !strings.Contains(target, "#")
}

// splitAttrPath splits a Nix attribute path at the dots that are not inside
// double quotes: a."b.c".d has three components.
func splitAttrPath(attr string) []string {
	var parts []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(attr); i++ {
		c := attr[i]
		switch {
		case c == '\\' && quoted && i+1 < len(attr):
			cur.WriteByte(c)
			i++
			cur.WriteByte(attr[i])
			continue
		case c == '"':
			quoted = !quoted
		case c == '.' && !quoted:
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(parts, cur.String())
}
