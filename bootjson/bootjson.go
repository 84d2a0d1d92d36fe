// Package bootjson reads a NixOS bootspec (RFC 0125, boot.json) and maps the
// files it names to the host, so that a system can be booted without an image.
package bootjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"
)

// DefaultStoreDir is the store directory as the guest (and boot.json) sees it.
const DefaultStoreDir = "/nix/store"

// SupportedSystems are the values of "system" that sonix-run can boot.
var SupportedSystems = []string{"x86_64-linux", "aarch64-linux"}

const (
	keyV1             = "org.nixos.bootspec.v1"
	keySpecialisation = "org.nixos.specialisation.v1"
)

// Spec is one org.nixos.bootspec.v1 document.
type Spec struct {
	Init, Kernel, Initrd, InitrdSecrets string // Initrd and InitrdSecrets optional ("" when absent)
	KernelParams                        []string
	Label, System, Toplevel             string
}

// Document is a parsed boot.json.
type Document struct {
	Path            string                     // the boot.json file that was read (absolute, after resolving the target)
	Spec            Spec                       // "org.nixos.bootspec.v1"
	Specialisations map[string]Spec            // "org.nixos.specialisation.v1" (nil when there are none)
	Extensions      map[string]json.RawMessage // every other top-level key (nil when there are none)
}

// Error is a problem with a boot.json; every error the package returns for
// bad input is an *Error.
type Error struct {
	File      string // the boot.json path
	Field     string // JSON path of the field, e.g. org.nixos.bootspec.v1.kernelParams[2]; "" for whole-file problems
	Line, Col int    // for malformed JSON (1-based), else 0
	Msg       string // what was expected / what was found
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
		}
		b.WriteString(": ")
	}
	if e.Field != "" && e.Line == 0 {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Supported reports whether system is one of SupportedSystems.
func Supported(system string) bool {
	for _, s := range SupportedSystems {
		if s == system {
			return true
		}
	}
	return false
}

// Load reads the target: a boot.json file, a toplevel directory holding
// boot.json, or a symlink to either (e.g. ./result).
func Load(target string) (*Document, error) { return LoadStore(target, DefaultStoreDir) }

// LoadStore is Load for a host whose store lives in storeDir (e.g. a chroot
// store): symlinks to /nix/store/X, such as ./result, are followed to storeDir/X.
func LoadStore(target, storeDir string) (*Document, error) {
	abs, err := filepath.Abs(target)
	if err != nil {
		return nil, &Error{File: target, Msg: err.Error()}
	}
	p, at, err := resolve(abs, hostStore(storeDir))
	if err != nil {
		msg := "cannot open: " + describe(abs, at, err)
		if isNotExist(err) {
			msg = "does not exist (expected a boot.json file or a NixOS toplevel directory, e.g. ./result)"
			if viaLink(abs, at) {
				msg = fmt.Sprintf("does not exist (%s is missing; expected a boot.json file or a NixOS toplevel directory, e.g. ./result)", at)
			}
		}
		return nil, &Error{File: target, Msg: msg}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, &Error{File: target, Msg: "cannot open: " + err.Error()}
	}
	if fi.IsDir() {
		dir := p
		if p, at, err = resolve(filepath.Join(dir, "boot.json"), hostStore(storeDir)); err != nil {
			if !isNotExist(err) {
				return nil, &Error{File: target, Msg: "cannot open boot.json: " + describe(dir, at, err)}
			}
			msg := "not a NixOS toplevel: no boot.json in " + dir +
				" (bootspec is written into the toplevel by NixOS >= 23.05, e.g. ./result/boot.json)"
			if exists(filepath.Join(dir, "init")) && exists(filepath.Join(dir, "kernel")) {
				msg += "; it looks like a toplevel built without bootspec (NixOS < 23.05 or boot.bootspec.enable = false)"
			}
			return nil, &Error{File: target, Msg: msg}
		}
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, &Error{File: p, Msg: "cannot read: " + err.Error()}
	}
	return Parse(p, data)
}

// Parse parses data read from file name (name is used in error messages).
func Parse(name string, data []byte) (*Document, error) {
	ps := parser{file: name}
	// Unmarshalling into a RawMessage validates the whole input, trailing
	// data included, and gives us byte offsets for syntax errors.
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, ps.jsonError(data, err)
	}
	top, err := ps.object("", raw, "a JSON object (a bootspec document) at the top level")
	if err != nil {
		return nil, err
	}
	d := &Document{Path: name}
	if d.Spec, err = ps.document("", top); err != nil {
		return nil, err
	}
	if sp, ok := top[keySpecialisation]; ok && kind(sp) != "null" {
		if d.Specialisations, err = ps.specialisations(sp); err != nil {
			return nil, err
		}
	}
	for k, v := range top {
		if k == keyV1 || k == keySpecialisation {
			continue
		}
		if d.Extensions == nil {
			d.Extensions = map[string]json.RawMessage{}
		}
		d.Extensions[k] = v
	}
	return d, nil
}

// Select returns the spec to boot: "" means the main one; an unknown name is
// an error listing the specialisations there are.
func (d *Document) Select(specialisation string) (Spec, error) {
	if specialisation == "" {
		return d.Spec, nil
	}
	if s, ok := d.Specialisations[specialisation]; ok {
		return s, nil
	}
	msg := fmt.Sprintf("no specialisation %q", specialisation)
	if len(d.Specialisations) == 0 {
		msg += " (this system has no specialisations)"
	} else {
		names := make([]string, 0, len(d.Specialisations))
		for n := range d.Specialisations {
			names = append(names, n)
		}
		sort.Strings(names)
		msg += " (there are: " + strings.Join(names, ", ") + ")"
	}
	return Spec{}, &Error{File: d.Path, Field: keySpecialisation, Msg: msg}
}

// parser carries the file name into every error it makes.
type parser struct{ file string }

func (ps parser) err(field, format string, a ...any) *Error {
	return &Error{File: ps.file, Field: field, Msg: fmt.Sprintf(format, a...)}
}

func (ps parser) jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// Offset counts the offending byte as read; at end of input it is
		// len(data), and pointing just past the last byte is right there.
		off := int(se.Offset)
		if off > 0 && off <= len(data) && se.Error() != "unexpected end of JSON input" {
			off--
		}
		line, col := lineCol(data, off)
		return &Error{File: ps.file, Line: line, Col: col, Msg: "malformed JSON: " + se.Error()}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		line, col := lineCol(data, int(te.Offset))
		return &Error{File: ps.file, Field: te.Field, Line: line, Col: col,
			Msg: fmt.Sprintf("malformed JSON: expected %s, found %s", te.Type, te.Value)}
	}
	return &Error{File: ps.file, Msg: "malformed JSON: " + err.Error()}
}

// lineCol turns a byte offset into a 1-based line and column (in characters).
func lineCol(data []byte, off int) (line, col int) {
	off = min(max(off, 0), len(data))
	before := data[:off]
	start := bytes.LastIndexByte(before, '\n') + 1
	return bytes.Count(before, []byte{'\n'}) + 1, utf8.RuneCount(before[start:]) + 1
}

// kind names the JSON type of a raw value the way messages use it.
func kind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func (ps parser) object(field string, raw json.RawMessage, what string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if k := kind(raw); k != "an object" {
		return nil, ps.err(field, "expected %s, found %s", what, k)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, ps.err(field, "%v", err)
	}
	return m, nil
}

// document parses the org.nixos.bootspec.v1 member of a (top-level or
// specialisation) document; prefix is the document's JSON path.
func (ps parser) document(prefix string, doc map[string]json.RawMessage) (Spec, error) {
	field := join(prefix, keyV1)
	raw, ok := doc[keyV1]
	switch {
	case ok:
	case doc["v1"] != nil:
		return Spec{}, ps.err(field, `missing; found "v1" instead: this is the old preview format of NixOS 22.11 `+
			`(before RFC 0125 was merged); NixOS 23.05+ writes org.nixos.bootspec.v1, rebuild the system with a newer NixOS`)
	case doc["schemaVersion"] != nil:
		return Spec{}, ps.err(field, `missing; found "schemaVersion" instead: this is an early RFC 0125 draft format; `+
			`NixOS 23.05+ writes org.nixos.bootspec.v1, rebuild the system with a newer NixOS`)
	default:
		return Spec{}, ps.err(field, "missing (expected the bootspec object that NixOS >= 23.05 writes)")
	}
	v1, err := ps.object(field, raw, "an object (the bootspec)")
	if err != nil {
		return Spec{}, err
	}
	var s Spec
	// Checked in key order, as jq --sort-keys writes them, so the first error
	// reported is the first one in the file.
	for _, f := range []struct {
		key, desc      string
		dst            *string
		required, path bool
	}{
		{"init", "the stage-2 init path", &s.Init, true, true},
		{"initrd", "the initrd path", &s.Initrd, false, true},
		{"initrdSecrets", "the initrd secrets appender path", &s.InitrdSecrets, false, true},
		{"kernel", "the kernel image path", &s.Kernel, true, true},
		{"kernelParams", "", nil, true, false},
		{"label", "the boot entry label", &s.Label, true, false},
		{"system", "the system, e.g. x86_64-linux", &s.System, true, false},
		{"toplevel", "the toplevel store path", &s.Toplevel, true, true},
	} {
		fld := field + "." + f.key
		raw, ok := v1[f.key]
		if f.key == "kernelParams" {
			if s.KernelParams, err = ps.params(fld, raw, ok); err != nil {
				return Spec{}, err
			}
			continue
		}
		k := kind(raw)
		// Optional fields are normally omitted; null is taken to mean the
		// same, as serde-based writers may emit it.
		if !f.required && (!ok || k == "null") {
			continue
		}
		switch {
		case !ok:
			return Spec{}, ps.err(fld, "missing (expected %s, a string)", f.desc)
		case k != "a string":
			return Spec{}, ps.err(fld, "expected a string (%s), found %s", f.desc, k)
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return Spec{}, ps.err(fld, "%v", err)
		}
		v := *f.dst
		switch {
		case f.path && v == "":
			return Spec{}, ps.err(fld, "empty string (expected %s, an absolute path)", f.desc)
		case f.path && !path.IsAbs(v):
			return Spec{}, ps.err(fld, "expected an absolute path (%s), found %q", f.desc, v)
		case f.key == "system" && !Supported(v):
			return Spec{}, ps.err(fld, "%q is not supported (sonix-run boots %s)", v, strings.Join(SupportedSystems, " and "))
		}
	}
	return s, nil
}

func (ps parser) params(field string, raw json.RawMessage, present bool) ([]string, error) {
	const what = "the kernel parameters, an array of strings"
	if !present {
		return nil, ps.err(field, "missing (expected %s)", what)
	}
	if k := kind(raw); k != "an array" {
		return nil, ps.err(field, "expected %s, found %s", what, k)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, ps.err(field, "%v", err)
	}
	params := make([]string, len(elems))
	for i, e := range elems {
		fld := fmt.Sprintf("%s[%d]", field, i)
		if k := kind(e); k != "a string" {
			return nil, ps.err(fld, "expected a string, found %s", k)
		}
		if err := json.Unmarshal(e, &params[i]); err != nil {
			return nil, ps.err(fld, "%v", err)
		}
	}
	return params, nil
}

func (ps parser) specialisations(raw json.RawMessage) (map[string]Spec, error) {
	m, err := ps.object(keySpecialisation, raw, "an object mapping names to bootspec documents")
	if err != nil || len(m) == 0 {
		return nil, err
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names) // report errors deterministically
	specs := make(map[string]Spec, len(m))
	for _, n := range names {
		prefix := keySpecialisation + "." + n
		doc, err := ps.object(prefix, m[n], "an object (the specialisation's bootspec document)")
		if err != nil {
			return nil, err
		}
		if specs[n], err = ps.document(prefix, doc); err != nil {
			return nil, err
		}
	}
	return specs, nil
}

// HostPaths is where the files a spec names are found on the host.
type HostPaths struct{ Kernel, Initrd, Init string } // Initrd "" when the spec has none

// Locate maps the spec's paths to the host. A path under /nix/store/X is
// looked up as storeDir/X ("" means DefaultStoreDir). Every file must be in
// the store, and stay there once symlinks are followed (store-aware, see
// resolve): the guest sees only the shared store on a tmpfs root, and a
// boot.json is input from whoever built the system, which must not be able
// to have QEMU load a host file such as ~/.ssh/id_ed25519 into guest
// memory. (A kernel or initrd of the user's own is given with --kernel and
// --initrd instead.) Each file must resolve to a regular file. The returned
// paths are the resolved host paths; file is used in errors.
func (s Spec) Locate(file, storeDir string) (HostPaths, error) {
	storeDir = hostStore(storeDir)
	// The store as it is on the host, links (such as /nix -> /home/nix)
	// followed, to compare resolved paths with.
	realStore, _, err := resolve(storeDir, storeDir)
	if err != nil {
		realStore = storeDir // a missing store fails each lookup below
	}
	var hp HostPaths
	if hp.Kernel, err = locate(file, "kernel", s.Kernel, storeDir, realStore); err != nil {
		return HostPaths{}, err
	}
	if s.Initrd != "" {
		if hp.Initrd, err = locate(file, "initrd", s.Initrd, storeDir, realStore); err != nil {
			return HostPaths{}, err
		}
	}
	if hp.Init, err = locate(file, "init", s.Init, storeDir, realStore); err != nil {
		return HostPaths{}, err
	}
	return hp, nil
}

func hostStore(storeDir string) string {
	if storeDir == "" {
		return DefaultStoreDir
	}
	if abs, err := filepath.Abs(storeDir); err == nil {
		return abs
	}
	return storeDir
}

func locate(file, key, p, storeDir, realStore string) (string, error) {
	e := &Error{File: file, Field: keyV1 + "." + key}
	switch {
	case p == "":
		e.Msg = "missing (expected an absolute path)"
		return "", e
	case !path.IsAbs(p):
		e.Msg = fmt.Sprintf("expected an absolute path, found %q", p)
		return "", e
	}
	host, inStore := toHost(path.Clean(p), storeDir)
	if !inStore {
		e.Msg = fmt.Sprintf("%s is outside %s; a system's files must be store paths (the guest sees only the shared store, and boot.json may not name host files; boot your own kernel or initrd with --kernel or --initrd)",
			p, DefaultStoreDir)
		return "", e
	}
	resolved, at, err := resolve(host, storeDir)
	if err != nil {
		if isNotExist(err) {
			e.Msg = fmt.Sprintf("%s does not exist on the host (looked up %s", p, host)
			if viaLink(host, at) {
				e.Msg += ", missing " + at
			}
			e.Msg += ")"
		} else {
			e.Msg = fmt.Sprintf("cannot look up %s on the host: %s", p, describe(host, at, err))
		}
		return "", e
	}
	if !within(resolved, realStore) {
		e.Msg = fmt.Sprintf("%s leads out of the store, to %s (a symbolic link); a system's files must be store paths, and boot.json may not name host files", p, resolved)
		return "", e
	}
	fi, err := os.Stat(resolved)
	switch {
	case err != nil:
		e.Msg = fmt.Sprintf("cannot look up %s on the host: %v", p, err)
	case !fi.Mode().IsRegular():
		e.Msg = fmt.Sprintf("%s is not a regular file on the host (found %s at %s)", p, modeName(fi.Mode()), resolved)
	default:
		return resolved, nil
	}
	return "", e
}

// within says whether p is dir or below it (both clean and absolute).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// toHost maps a clean guest path under DefaultStoreDir into storeDir.
func toHost(p, storeDir string) (string, bool) {
	if p == DefaultStoreDir || strings.HasPrefix(p, DefaultStoreDir+"/") {
		return filepath.Join(storeDir, filepath.FromSlash(p[len(DefaultStoreDir):])), true
	}
	return p, false
}

var errLoop = errors.New("too many levels of symbolic links")

// maxLinks bounds symlink hops, as the kernel's MAXSYMLINKS does.
const maxLinks = 40

// resolve follows symlinks in the absolute host path p component by component,
// like filepath.EvalSymlinks, except that an absolute link target under
// /nix/store is read as the guest sees it and remapped into storeDir: store
// paths' symlinks (e.g. toplevel/kernel) point into /nix/store even when the
// host keeps the store elsewhere. On failure it returns the path it got stuck at.
func resolve(p, storeDir string) (resolved, at string, err error) {
	dest, rest, links := string(filepath.Separator), p, 0
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(strings.TrimLeft(rest, "/"), "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			dest = filepath.Dir(dest) // dest has no symlinks, so this is exact
			continue
		}
		next := filepath.Join(dest, comp)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", next, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			dest = next
			continue
		}
		if links++; links > maxLinks {
			return "", next, errLoop
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", next, err
		}
		if path.IsAbs(target) {
			target, _ = toHost(path.Clean(target), storeDir)
			dest = string(filepath.Separator)
		}
		rest = target + "/" + rest
	}
	return dest, "", nil
}

// viaLink reports whether resolving p failed at a path that is not p or one
// of its ancestors, i.e. somewhere a symlink led to.
func viaLink(p, at string) bool {
	return at != p && !strings.HasPrefix(p, strings.TrimSuffix(at, "/")+"/")
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// describe says what went wrong resolving p, naming where if that differs.
func describe(p, at string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case isNotExist(err) && !viaLink(p, at):
		return p + " does not exist"
	case isNotExist(err):
		return fmt.Sprintf("%s does not exist (missing %s)", p, at)
	case err == errLoop && at == p:
		return fmt.Sprintf("%s: %v (a symlink loop?)", p, err)
	case err == errLoop:
		return fmt.Sprintf("%s: %v at %s (a symlink loop?)", p, err, at)
	}
	return fmt.Sprintf("%s: %v", at, err)
}

func modeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}
