package bootjson

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// v1 returns a valid org.nixos.bootspec.v1 object as JSON, changed by mod
// (a nil value deletes the key; the string "null" sets null).
func v1(mod map[string]any) string {
	m := map[string]any{
		"init":         "/nix/store/aaa-nixos-system-vm/init",
		"initrd":       "/nix/store/bbb-initrd-linux-6.12/initrd",
		"kernel":       "/nix/store/ccc-linux-6.12/bzImage",
		"kernelParams": []string{"loglevel=4", "console=ttyS0"},
		"label":        "NixOS Test 26.05 (Linux 6.12)",
		"system":       "x86_64-linux",
		"toplevel":     "/nix/store/aaa-nixos-system-vm",
	}
	for k, v := range mod {
		switch v {
		case nil:
			delete(m, k)
		case "null":
			m[k] = nil
		default:
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// doc wraps a v1 object into a top-level document.
func doc(v1 string) string { return `{"org.nixos.bootspec.v1": ` + v1 + `}` }

var wantMain = Spec{
	Init:         "/nix/store/aaa-nixos-system-vm/init",
	Initrd:       "/nix/store/bbb-initrd-linux-6.12/initrd",
	Kernel:       "/nix/store/ccc-linux-6.12/bzImage",
	KernelParams: []string{"loglevel=4", "console=ttyS0"},
	Label:        "NixOS Test 26.05 (Linux 6.12)",
	System:       "x86_64-linux",
	Toplevel:     "/nix/store/aaa-nixos-system-vm",
}

const ext = `{"sortKey": "nixos", "n": [1, 2]}`

var validDoc = `{
  "org.nixos.bootspec.v1": ` + v1(nil) + `,
  "org.nixos.specialisation.v1": {
    "debug": {"org.nixos.bootspec.v1": ` + v1(map[string]any{
	"kernelParams": []string{"debug"}, "initrd": nil, "system": "aarch64-linux", "extra": 1}) + `},
    "alt": {"org.nixos.bootspec.v1": ` + v1(map[string]any{"initrd": "null", "initrdSecrets": "/nix/store/ddd-append-secrets/bin/append"}) + `}
  },
  "org.nixos.systemd-boot": ` + ext + `
}`

func TestParseValid(t *testing.T) {
	d, err := Parse("/p/boot.json", []byte(validDoc))
	if err != nil {
		t.Fatal(err)
	}
	if d.Path != "/p/boot.json" {
		t.Errorf("Path = %q", d.Path)
	}
	if !reflect.DeepEqual(d.Spec, wantMain) {
		t.Errorf("Spec = %+v\nwant %+v", d.Spec, wantMain)
	}
	debug := wantMain
	debug.KernelParams, debug.Initrd, debug.System = []string{"debug"}, "", "aarch64-linux"
	alt := wantMain
	alt.Initrd, alt.InitrdSecrets = "", "/nix/store/ddd-append-secrets/bin/append"
	if want := map[string]Spec{"debug": debug, "alt": alt}; !reflect.DeepEqual(d.Specialisations, want) {
		t.Errorf("Specialisations = %+v\nwant %+v", d.Specialisations, want)
	}
	if len(d.Extensions) != 1 || string(d.Extensions["org.nixos.systemd-boot"]) != ext {
		t.Errorf("Extensions = %q, want the systemd-boot extension kept verbatim", d.Extensions)
	}

	// The shape NixOS writes: an empty specialisation map, no extensions.
	d, err = Parse("b.json", []byte(`{"org.nixos.bootspec.v1": `+v1(map[string]any{"kernelParams": []string{}})+`, "org.nixos.specialisation.v1": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Specialisations) != 0 || d.Extensions != nil || len(d.Spec.KernelParams) != 0 {
		t.Errorf("minimal document parsed as %+v", d)
	}
}

func TestParseErrors(t *testing.T) {
	const spec = "org.nixos.bootspec.v1"
	for _, tc := range []struct {
		name, in, field, msg string
		line, col            int
	}{
		{"malformed", "{\n  \"org.nixos.bootspec.v1\": {\n    \"init\": \"x\",\n  }\n}", "",
			"malformed JSON: invalid character '}' looking for beginning of object key string", 4, 3},
		{"empty input", "", "", "malformed JSON: unexpected end of JSON input", 1, 1},
		{"truncated", "{\n  \"a\": ", "", "unexpected end of JSON input", 2, 8},
		{"trailing data", "{}\n {}", "", "malformed JSON: invalid character '{' after top-level value", 2, 2},
		{"top level array", `[]`, "", "expected a JSON object (a bootspec document) at the top level, found an array", 0, 0},
		{"top level null", ` null `, "", "found null", 0, 0},
		{"missing v1", `{"org.nixos.systemd-boot": {}}`, spec, "missing (expected the bootspec object", 0, 0},
		{"legacy 22.11", `{"v1": {"init": "/nix/store/x/init", "kernel": "/nix/store/y/bzImage"}}`, spec,
			"old preview format of NixOS 22.11", 0, 0},
		{"legacy mentions new key", `{"v1": {}}`, spec, "NixOS 23.05+ writes org.nixos.bootspec.v1", 0, 0},
		{"early draft", `{"schemaVersion": 1}`, spec, "early RFC 0125 draft", 0, 0},
		{"v1 not object", `{"org.nixos.bootspec.v1": "x"}`, spec, "expected an object (the bootspec), found a string", 0, 0},
		{"missing kernel", doc(v1(map[string]any{"kernel": nil})), spec + ".kernel",
			"missing (expected the kernel image path, a string)", 0, 0},
		{"missing init", doc(v1(map[string]any{"init": nil})), spec + ".init", "missing", 0, 0},
		{"missing label", doc(v1(map[string]any{"label": nil})), spec + ".label", "missing", 0, 0},
		{"missing system", doc(v1(map[string]any{"system": nil})), spec + ".system", "missing", 0, 0},
		{"missing toplevel", doc(v1(map[string]any{"toplevel": nil})), spec + ".toplevel", "missing", 0, 0},
		{"kernel number", doc(v1(map[string]any{"kernel": 5})), spec + ".kernel", "found a number", 0, 0},
		{"kernel null", doc(v1(map[string]any{"kernel": "null"})), spec + ".kernel", "expected a string (the kernel image path), found null", 0, 0},
		{"init object", doc(v1(map[string]any{"init": map[string]any{}})), spec + ".init", "found an object", 0, 0},
		{"initrd boolean", doc(v1(map[string]any{"initrd": true})), spec + ".initrd", "found a boolean", 0, 0},
		{"label array", doc(v1(map[string]any{"label": []int{}})), spec + ".label", "found an array", 0, 0},
		{"kernelParams missing", doc(v1(map[string]any{"kernelParams": nil})), spec + ".kernelParams",
			"missing (expected the kernel parameters, an array of strings)", 0, 0},
		{"kernelParams string", doc(v1(map[string]any{"kernelParams": "quiet"})), spec + ".kernelParams", "found a string", 0, 0},
		{"kernelParams element", doc(v1(map[string]any{"kernelParams": []any{"quiet", 3}})), spec + ".kernelParams[1]",
			"expected a string, found a number", 0, 0},
		{"unsupported system", doc(v1(map[string]any{"system": "riscv64-linux"})), spec + ".system",
			`"riscv64-linux" is not supported (sonix-run boots x86_64-linux and aarch64-linux)`, 0, 0},
		{"empty init", doc(v1(map[string]any{"init": ""})), spec + ".init", "empty string (expected the stage-2 init path", 0, 0},
		{"empty kernel", doc(v1(map[string]any{"kernel": ""})), spec + ".kernel", "empty string", 0, 0},
		{"relative kernel", doc(v1(map[string]any{"kernel": "bzImage"})), spec + ".kernel",
			`expected an absolute path (the kernel image path), found "bzImage"`, 0, 0},
		{"relative init", doc(v1(map[string]any{"init": "./init"})), spec + ".init", "expected an absolute path", 0, 0},
		{"relative initrd", doc(v1(map[string]any{"initrd": "initrd"})), spec + ".initrd", "expected an absolute path", 0, 0},
		{"relative toplevel", doc(v1(map[string]any{"toplevel": "result"})), spec + ".toplevel", "expected an absolute path", 0, 0},
		{"specialisations not object", `{"org.nixos.bootspec.v1": ` + v1(nil) + `, "org.nixos.specialisation.v1": []}`,
			"org.nixos.specialisation.v1", "found an array", 0, 0},
		{"specialisation not object", `{"org.nixos.bootspec.v1": ` + v1(nil) + `, "org.nixos.specialisation.v1": {"debug": 1}}`,
			"org.nixos.specialisation.v1.debug", "found a number", 0, 0},
		{"specialisation without v1", `{"org.nixos.bootspec.v1": ` + v1(nil) + `, "org.nixos.specialisation.v1": {"debug": {}}}`,
			"org.nixos.specialisation.v1.debug.org.nixos.bootspec.v1", "missing", 0, 0},
		{"specialisation malformed", `{"org.nixos.bootspec.v1": ` + v1(nil) + `, "org.nixos.specialisation.v1": {"debug": ` +
			doc(v1(map[string]any{"init": nil})) + `}}`,
			"org.nixos.specialisation.v1.debug.org.nixos.bootspec.v1.init", "missing (expected the stage-2 init path", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse("/p/boot.json", []byte(tc.in))
			if err == nil {
				t.Fatalf("no error, parsed %+v", d)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if e.File != "/p/boot.json" || e.Field != tc.field || e.Line != tc.line || e.Col != tc.col || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got %#v\nwant field %q line %d col %d msg containing %q", e, tc.field, tc.line, tc.col, tc.msg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"{\n  \"org.nixos.bootspec.v1\": {\n    \"init\": \"x\",\n  }\n}",
			"/p/boot.json:4:3: malformed JSON: invalid character '}' looking for beginning of object key string"},
		{doc(v1(map[string]any{"kernel": nil})),
			"/p/boot.json: org.nixos.bootspec.v1.kernel: missing (expected the kernel image path, a string)"},
		{doc(v1(map[string]any{"kernelParams": []any{"a", 1}})),
			"/p/boot.json: org.nixos.bootspec.v1.kernelParams[1]: expected a string, found a number"},
		{doc(v1(map[string]any{"system": "riscv64-linux"})),
			`/p/boot.json: org.nixos.bootspec.v1.system: "riscv64-linux" is not supported (sonix-run boots x86_64-linux and aarch64-linux)`},
		{`[1]`, "/p/boot.json: expected a JSON object (a bootspec document) at the top level, found an array"},
	} {
		_, err := Parse("/p/boot.json", []byte(tc.in))
		if err == nil || err.Error() != tc.want {
			t.Errorf("error = %v\nwant    %s", err, tc.want)
		}
	}
}

func TestSelect(t *testing.T) {
	d, err := Parse("/p/boot.json", []byte(validDoc))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := d.Select(""); err != nil || s.Kernel != wantMain.Kernel || s.Initrd != wantMain.Initrd {
		t.Errorf(`Select("") = %+v, %v`, s, err)
	}
	if s, err := d.Select("debug"); err != nil || s.System != "aarch64-linux" || !reflect.DeepEqual(s.KernelParams, []string{"debug"}) {
		t.Errorf(`Select("debug") = %+v, %v`, s, err)
	}
	_, err = d.Select("nope")
	var e *Error
	if !errors.As(err, &e) || e.Field != "org.nixos.specialisation.v1" ||
		!strings.Contains(e.Msg, `no specialisation "nope" (there are: alt, debug)`) {
		t.Errorf(`Select("nope") error = %#v`, err)
	}
	d.Specialisations = nil
	if _, err := d.Select("debug"); err == nil || !strings.Contains(err.Error(), "has no specialisations") {
		t.Errorf(`Select on a system without specialisations: %v`, err)
	}
}

// realTemp returns a temporary directory with symlinks in its path resolved,
// so expected paths compare equal to resolved ones (e.g. /var on macOS).
func realTemp(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	root := realTemp(t)
	top := filepath.Join(root, "store", "aaa-nixos-system-vm")
	bootJSON := filepath.Join(top, "boot.json")
	write(t, bootJSON, validDoc)
	symlink(t, top, filepath.Join(root, "result"))
	// Like ./result in a chroot store: it points into /nix/store.
	symlink(t, "/nix/store/aaa-nixos-system-vm", filepath.Join(root, "chroot-result"))
	write(t, filepath.Join(root, "bad", "boot.json"), `{"v1": {}}`)
	write(t, filepath.Join(root, "old", "init"), "")
	write(t, filepath.Join(root, "old", "kernel"), "")

	for _, target := range []string{bootJSON, top, filepath.Join(root, "result"), filepath.Join(root, "result", "boot.json")} {
		d, err := Load(target)
		if err != nil {
			t.Errorf("Load(%s): %v", target, err)
			continue
		}
		if d.Path != bootJSON || d.Spec.Kernel != wantMain.Kernel || len(d.Specialisations) != 2 {
			t.Errorf("Load(%s) = Path %q, %+v", target, d.Path, d)
		}
	}
	// Relative target.
	wd, _ := os.Getwd()
	if err := os.Chdir(root); err != nil {
		t.Fatal(err)
	}
	d, err := Load("result")
	os.Chdir(wd)
	if err != nil || d.Path != bootJSON {
		t.Errorf(`Load("result") = %+v, %v`, d, err)
	}
	if d, err := LoadStore(filepath.Join(root, "chroot-result"), filepath.Join(root, "store")); err != nil || d.Path != bootJSON {
		t.Errorf("LoadStore through a /nix/store symlink = %+v, %v", d, err)
	}

	for _, tc := range []struct{ name, target, file, msg string }{
		{"missing", filepath.Join(root, "nope"), filepath.Join(root, "nope"), "does not exist"},
		{"dangling symlink", filepath.Join(root, "chroot-result"), filepath.Join(root, "chroot-result"), "does not exist"},
		{"no boot.json", root, root, "not a NixOS toplevel: no boot.json in " + root + " (bootspec is written into the toplevel by NixOS >= 23.05, e.g. ./result/boot.json)"},
		{"toplevel without bootspec", filepath.Join(root, "old"), filepath.Join(root, "old"), "built without bootspec"},
		{"bad content", filepath.Join(root, "bad"), filepath.Join(root, "bad", "boot.json"), "22.11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.target)
			var e *Error
			if !errors.As(err, &e) || e.File != tc.file || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("Load(%s) error = %#v, want File %q and Msg containing %q", tc.target, err, tc.file, tc.msg)
			}
		})
	}

	// A boot.json that is a directory cannot be read, even by root.
	if err := os.MkdirAll(filepath.Join(root, "dirjson", "boot.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Load(filepath.Join(root, "dirjson"))
	var e *Error
	if !errors.As(err, &e) || e.File != filepath.Join(root, "dirjson", "boot.json") || !strings.Contains(e.Msg, "cannot read") {
		t.Errorf("Load(boot.json directory) error = %#v", err)
	}

	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root can read any file")
		}
		p := filepath.Join(root, "secret.json")
		write(t, p, validDoc)
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		var e *Error
		if !errors.As(err, &e) || e.File != p || !strings.Contains(e.Msg, "cannot read") {
			t.Errorf("Load(unreadable) error = %#v", err)
		}
	})
}

func TestLocate(t *testing.T) {
	root := realTemp(t)
	store := filepath.Join(root, "store")
	write(t, filepath.Join(store, "ccc-linux-6.12", "bzImage"), "kernel")
	write(t, filepath.Join(store, "bbb-initrd", "initrd"), "initrd")
	write(t, filepath.Join(store, "aaa-system", "init"), "#!/bin/sh")
	symlink(t, "/nix/store/ccc-linux-6.12/bzImage", filepath.Join(store, "aaa-system", "kernel"))
	symlink(t, "../bbb-initrd/initrd", filepath.Join(store, "aaa-system", "initrd"))
	symlink(t, "aaa-system", filepath.Join(store, "link-system")) // a symlinked directory mid-path
	symlink(t, "b", filepath.Join(store, "loop", "a"))
	symlink(t, "/nix/store/loop/a", filepath.Join(store, "loop", "b"))
	symlink(t, "/nix/store/gone/bzImage", filepath.Join(store, "dangling", "bzImage"))
	if err := os.MkdirAll(filepath.Join(store, "dir-linux", "bzImage"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostKernel := filepath.Join(root, "host", "vmlinuz")
	write(t, hostKernel, "kernel")
	// A malicious system's store links to host files.
	symlink(t, hostKernel, filepath.Join(store, "evil", "kernel"))
	symlink(t, "../../host/vmlinuz", filepath.Join(store, "evil", "initrd"))
	symlink(t, hostKernel, filepath.Join(store, "evil", "init"))

	spec := func(kernel, initrd, init string) Spec {
		return Spec{Kernel: kernel, Initrd: initrd, Init: init, System: "x86_64-linux"}
	}
	const initPath = "/nix/store/aaa-system/init"
	hostInit := filepath.Join(store, "aaa-system", "init")
	hostBz := filepath.Join(store, "ccc-linux-6.12", "bzImage")
	hostInitrd := filepath.Join(store, "bbb-initrd", "initrd")

	for _, tc := range []struct {
		name  string
		spec  Spec
		want  HostPaths
		field string // of the error, "" for success
		msg   string
	}{
		{"store paths", spec("/nix/store/ccc-linux-6.12/bzImage", "/nix/store/bbb-initrd/initrd", initPath),
			HostPaths{hostBz, hostInitrd, hostInit}, "", ""},
		{"absolute and relative symlinks", spec("/nix/store/aaa-system/kernel", "/nix/store/aaa-system/initrd", initPath),
			HostPaths{hostBz, hostInitrd, hostInit}, "", ""},
		{"symlinked directory", spec("/nix/store/link-system/kernel", "", "/nix/store/link-system/init"),
			HostPaths{Kernel: hostBz, Init: hostInit}, "", ""},
		{"kernel outside the store", spec(hostKernel, "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			hostKernel + " is outside /nix/store; a system's files must be store paths"},
		{"initrd outside the store", spec("/nix/store/ccc-linux-6.12/bzImage", "/root/.ssh/id_ed25519", initPath), HostPaths{}, "org.nixos.bootspec.v1.initrd",
			"/root/.ssh/id_ed25519 is outside /nix/store"},
		{"kernel climbing out with ..", spec("/nix/store/../../"+hostKernel, "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			"is outside /nix/store"},
		{"store link to a host file", spec("/nix/store/evil/kernel", "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			"/nix/store/evil/kernel leads out of the store, to " + hostKernel},
		{"store link climbing out", spec("/nix/store/evil/initrd", "/nix/store/evil/initrd", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			"leads out of the store, to " + hostKernel},
		{"init link out of the store", spec("/nix/store/ccc-linux-6.12/bzImage", "", "/nix/store/evil/init"), HostPaths{}, "org.nixos.bootspec.v1.init",
			"leads out of the store"},
		{"missing kernel", spec("/nix/store/zzz-linux/bzImage", "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			"/nix/store/zzz-linux/bzImage does not exist on the host (looked up " + filepath.Join(store, "zzz-linux", "bzImage") + ")"},
		{"dangling symlink", spec("/nix/store/dangling/bzImage", "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			"missing " + filepath.Join(store, "gone")},
		{"missing initrd", spec("/nix/store/ccc-linux-6.12/bzImage", "/nix/store/bbb-initrd/nope", initPath), HostPaths{}, "org.nixos.bootspec.v1.initrd", "does not exist"},
		{"missing init", spec("/nix/store/ccc-linux-6.12/bzImage", "", "/nix/store/aaa-system/nope"), HostPaths{}, "org.nixos.bootspec.v1.init", "does not exist"},
		{"symlink loop", spec("/nix/store/loop/a", "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel", "too many levels of symbolic links"},
		{"init outside the store", spec("/nix/store/ccc-linux-6.12/bzImage", "", "/sbin/init"), HostPaths{}, "org.nixos.bootspec.v1.init",
			"/sbin/init is outside /nix/store; a system's files must be store paths (the guest sees only the shared store"},
		{"kernel is a directory", spec("/nix/store/dir-linux/bzImage", "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel",
			"not a regular file on the host (found a directory"},
		{"relative kernel", spec("bzImage", "", initPath), HostPaths{}, "org.nixos.bootspec.v1.kernel", "expected an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.spec.Locate("/p/boot.json", store)
			if tc.field == "" {
				if err != nil || got != tc.want {
					t.Errorf("Locate = %+v, %v\nwant %+v", got, err, tc.want)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "/p/boot.json" || e.Field != tc.field || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("Locate error = %#v\nwant field %q, msg containing %q", err, tc.field, tc.msg)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{validDoc, doc(v1(nil)), `{"v1": {}}`, `[]`, ``, `{"org.nixos.bootspec.v1": {"kernelParams": [1]}}`,
		"{\n  \"a\": ", `{"org.nixos.bootspec.v1": ` + v1(nil) + `, "org.nixos.specialisation.v1": {"x": {}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse("fuzz.json", data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for name := range d.Specialisations {
			if _, err := d.Select(name); err != nil {
				t.Fatalf("Select(%q): %v", name, err)
			}
		}
	})
}
