package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Options say what to check.
type Options struct {
	Dir      string   // the module directory go list runs in
	GOARCH   string   // "arm64" or "amd64"; GOOS is darwin
	Patterns []string // package patterns, such as ./...
	// Overlay is a go build -overlay file: a JSON {"Replace": {path: file}}
	// map that both go list and the parser honour. Relative paths in it are
	// relative to Dir.
	Overlay string
	Go      string // the go command; "" finds one
}

// Problem is one error in a package the patterns matched.
type Problem struct {
	Package string
	Pos     string // file:line:column, "" for a package-level error
	Msg     string
}

func (p Problem) String() string {
	if p.Pos == "" {
		return p.Package + ": " + p.Msg
	}
	return p.Pos + ": " + p.Msg
}

// Result is what one check found.
type Result struct {
	Target  string   // darwin/<arch>
	Checked []string // the matched packages, type-checked with bodies
	// Files are the file names checked in each matched package.
	Files    map[string][]string
	CgoFiles int // how many of their files import "C" (faked)
	Deps     int // dependencies type-checked without bodies
	Problems []Problem
}

// listed is the part of `go list -json` output the check uses.
type listed struct {
	ImportPath string
	Name       string
	Dir        string
	Standard   bool
	DepOnly    bool
	GoFiles    []string
	CgoFiles   []string
	ImportMap  map[string]string
	Module     *struct {
		Path      string
		GoVersion string
	}
	Error *struct {
		Pos string
		Err string
	}
}

// Check lists the packages for darwin/GOARCH with cgo on, as a build on a
// Mac would see them, and type-checks them with go/types, faking the
// "C" package: each cgo file's Go side is checked against the real vz API,
// no C compiler needed. Dependencies are checked without function bodies;
// errors in them are problems too, since they make the check unreliable.
func Check(o Options) (*Result, error) {
	if o.GOARCH == "" {
		o.GOARCH = "arm64"
	}
	if len(o.Patterns) == 0 {
		o.Patterns = []string{"./..."}
	}
	pkgs, err := list(o)
	if err != nil {
		return nil, err
	}
	overlay, err := readOverlay(o.Overlay, o.Dir)
	if err != nil {
		return nil, err
	}
	res := &Result{Target: "darwin/" + o.GOARCH, Files: map[string][]string{}}
	fset := token.NewFileSet()
	done := map[string]*types.Package{"unsafe": types.Unsafe}
	sizes := types.SizesFor("gc", o.GOARCH)
	for _, lp := range pkgs {
		if lp.ImportPath == "unsafe" {
			continue
		}
		ours := !lp.DepOnly
		if lp.Error != nil {
			if ours && !strings.Contains(lp.Error.Err, "build constraints exclude all Go files") {
				res.Problems = append(res.Problems, Problem{Package: lp.ImportPath, Pos: lp.Error.Pos, Msg: lp.Error.Err})
			}
			if len(lp.GoFiles)+len(lp.CgoFiles) == 0 {
				continue
			}
		}
		var files []*ast.File
		var parseFailed bool
		for _, name := range append(append([]string(nil), lp.GoFiles...), lp.CgoFiles...) {
			path := filepath.Join(lp.Dir, name)
			src, err := readSource(path, overlay)
			if err != nil {
				return nil, err
			}
			f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
			if err != nil {
				res.Problems = append(res.Problems, Problem{Package: lp.ImportPath, Msg: err.Error()})
				parseFailed = true
				continue
			}
			files = append(files, f)
		}
		if parseFailed {
			continue
		}
		var errs []Problem
		conf := types.Config{
			FakeImportC:      true,
			IgnoreFuncBodies: !ours,
			Sizes:            sizes,
			Importer:         importer{done: done, importMap: lp.ImportMap},
			Error: func(err error) {
				var te types.Error
				if errors.As(err, &te) {
					errs = append(errs, Problem{Package: lp.ImportPath, Pos: te.Fset.Position(te.Pos).String(), Msg: te.Msg})
				} else {
					errs = append(errs, Problem{Package: lp.ImportPath, Msg: err.Error()})
				}
			},
		}
		if lp.Module != nil && lp.Module.GoVersion != "" && !lp.Standard {
			conf.GoVersion = "go" + lp.Module.GoVersion
		}
		pkg, _ := conf.Check(lp.ImportPath, fset, files, nil)
		done[lp.ImportPath] = pkg
		if ours {
			res.Checked = append(res.Checked, lp.ImportPath)
			res.Files[lp.ImportPath] = append(append([]string(nil), lp.GoFiles...), lp.CgoFiles...)
			res.CgoFiles += len(lp.CgoFiles)
			res.Problems = append(res.Problems, errs...)
		} else {
			res.Deps++
			if len(errs) > 0 {
				res.Problems = append(res.Problems, Problem{Package: lp.ImportPath,
					Msg: fmt.Sprintf("dependency does not type-check (%d errors), so the check is unreliable; first: %s", len(errs), errs[0])})
			}
		}
	}
	sort.Strings(res.Checked)
	return res, nil
}

// list runs go list -deps, which prints each package after its
// dependencies: the order to type-check them in.
func list(o Options) ([]*listed, error) {
	goCmd := o.Go
	if goCmd == "" {
		goCmd = findGo()
	}
	args := []string{"list", "-e", "-deps", "-json=ImportPath,Name,Dir,Standard,DepOnly,GoFiles,CgoFiles,ImportMap,Module,Error"}
	if o.Overlay != "" {
		args = append(args, "-overlay", o.Overlay)
	}
	args = append(args, "--")
	args = append(args, o.Patterns...)
	cmd := exec.Command(goCmd, args...)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "GOOS=darwin", "GOARCH="+o.GOARCH, "CGO_ENABLED=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go list for darwin/%s: %v\n%s", o.GOARCH, err, stderr.Bytes())
	}
	var pkgs []*listed
	dec := json.NewDecoder(&stdout)
	for {
		p := new(listed)
		if err := dec.Decode(p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// findGo finds the go command on $PATH. Under go test and go run that is
// the toolchain running them: the go command puts its own bin directory
// first on the PATH it gives them.
func findGo() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

func readOverlay(path, dir string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	var o struct{ Replace map[string]string }
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("overlay %s: %w", path, err)
	}
	abs := map[string]string{}
	for k, v := range o.Replace {
		if !filepath.IsAbs(k) {
			k = filepath.Join(dir, k)
		}
		if v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
		}
		abs[filepath.Clean(k)] = v
	}
	return abs, nil
}

func readSource(path string, overlay map[string]string) ([]byte, error) {
	if r, ok := overlay[filepath.Clean(path)]; ok {
		path = r
	}
	return os.ReadFile(path)
}

// importer resolves imports to packages already checked, through the
// importing package's ImportMap (vendored standard library paths).
type importer struct {
	done      map[string]*types.Package
	importMap map[string]string
}

func (im importer) Import(path string) (*types.Package, error) {
	if p, ok := im.importMap[path]; ok {
		path = p
	}
	if pkg := im.done[path]; pkg != nil {
		return pkg, nil
	}
	return nil, fmt.Errorf("package %s was not listed before its importer", path)
}
