package nixbuild

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// inDir runs the test from dir, so that relative targets resolve there.
func inDir(t *testing.T, dir string) {
	t.Helper()
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chdir(old) })
}

func TestIsInstallable(t *testing.T) {
	dir := t.TempDir()
	inDir(t, dir)
	// A built system as the launcher takes it.
	must(t, os.MkdirAll("toplevel", 0o755))
	must(t, os.WriteFile("toplevel/boot.json", []byte("{}"), 0o644))
	must(t, os.Symlink("toplevel", "result"))
	must(t, os.Symlink("gone", "stale-result"))
	must(t, os.WriteFile("boot.json", []byte("{}"), 0o644))
	must(t, os.WriteFile("vm.nix", []byte("{}"), 0o644))
	must(t, os.MkdirAll("dir.nix", 0o755))
	must(t, os.WriteFile("odd#name", []byte("{}"), 0o644))

	tests := []struct {
		target string
		want   bool
	}{
		// Flake outputs.
		{".#vm", true},
		{".#nixosConfigurations.vm", true},
		{".#", true},
		{"github:o/r#x", true},
		{"github:o/r?ref=dev#vm", true},
		{"flake-ref#attr", true},
		{"nixpkgs#hello", true},
		{"/src/my-flake#vm", true},
		{"../..#vm", true},
		{"path:/src/flake#vm", true},
		{"git+https://example.org/r.git#vm", true},
		// Flake references without an attribute.
		{"github:o/r", true},
		{"gitlab:o/r", true},
		{"path:/src/flake", true},
		{"git+ssh://git@example.org/r", true},
		{"https://example.org/flake.tar.gz", true},
		{"flake:nixpkgs", true},
		// Nix files.
		{"vm.nix", true},
		{"./vm.nix", true},
		{"path/to/file.nix", true},    // missing: nix says so
		{"/abs/missing/vm.nix", true}, // likewise
		{"dir.nix", false},            // a directory
		// A derivation with outputs.
		{"/nix/store/abc-nixos-system-vm.drv^out", true},
		// Built systems and other plain paths.
		{"boot.json", false},
		{"./boot.json", false},
		{"toplevel", false},
		{"toplevel/", false},
		{"toplevel/boot.json", false},
		{"result", false},
		{"./result", false},
		{"stale-result", false},
		{".", false},
		{dir, false},
		{"odd#name", false},
		{"missing/boot.json", false},
		{"missing-dir", false},
		{"", false},
		{"nixpkgs", false}, // an indirect flake without '#' reads as a path
	}
	for _, tt := range tests {
		if got := IsInstallable(tt.target); got != tt.want {
			t.Errorf("IsInstallable(%q) = %v, want %v", tt.target, got, tt.want)
		}
	}
}

func TestInstallable(t *testing.T) {
	const tl = ".config.system.build.toplevel"
	tests := []struct{ in, want string }{
		{".#vm", ".#nixosConfigurations.vm" + tl},
		{"github:o/r#vm", "github:o/r#nixosConfigurations.vm" + tl},
		{"github:o/r?dir=sub#vm", "github:o/r?dir=sub#nixosConfigurations.vm" + tl},
		{`.#"my.vm"`, `.#nixosConfigurations."my.vm"` + tl},
		{".#nixosConfigurations.vm", ".#nixosConfigurations.vm" + tl},
		{`.#nixosConfigurations."a.b"`, `.#nixosConfigurations."a.b"` + tl},
		{".#nixosConfigurations.vm" + tl, ".#nixosConfigurations.vm" + tl},
		{".#nixosConfigurations.vm.config", ".#nixosConfigurations.vm.config"},
		{".#packages.x86_64-linux.toplevel", ".#packages.x86_64-linux.toplevel"},
		{".#vm^out", ".#vm^out"},
		{".#", ".#"},
		{"github:o/r", "github:o/r"},
		{"vm.nix", "vm.nix"},
	}
	for _, tt := range tests {
		if got := Installable(tt.in); got != tt.want {
			t.Errorf("Installable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCommand(t *testing.T) {
	base := []string{"nix", "--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--json"}
	tests := []struct {
		target string
		tail   []string
	}{
		{".#vm", []string{".#nixosConfigurations.vm.config.system.build.toplevel"}},
		{"./vm.nix", []string{"--file", "./vm.nix"}},
		{"github:o/r", []string{"github:o/r"}},
	}
	for _, tt := range tests {
		want := append(append([]string{}, base...), tt.tail...)
		if got := Command(tt.target); !reflect.DeepEqual(got, want) {
			t.Errorf("Command(%q) = %q, want %q", tt.target, got, want)
		}
	}
}

func TestSplitAttrPath(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"vm", []string{"vm"}},
		{"a.b.c", []string{"a", "b", "c"}},
		{`a."b.c".d`, []string{"a", `"b.c"`, "d"}},
		{`"x\".y"`, []string{`"x\".y"`}},
	}
	for _, tt := range tests {
		if got := splitAttrPath(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitAttrPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBuildWithoutNix(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // an empty directory: no nix anywhere
	_, err := Build(context.Background(), ".#vm", nil)
	if err == nil {
		t.Fatal("Build succeeded without nix")
	}
	if !errors.Is(err, ErrNoNix) {
		t.Errorf("error %v does not match ErrNoNix", err)
	}
	const want = ".#vm looks like a Nix installable, but nix is not installed; build it yourself and pass ./result"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// fakeNix puts a nix on an otherwise empty $PATH that records its arguments
// in $dir/args and then runs script.
func fakeNix(t *testing.T, script string) (argsFile string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the fake nix is a shell script")
	}
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	body := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + argsFile + "\n" + script + "\n"
	must(t, os.WriteFile(filepath.Join(dir, "nix"), []byte(body), 0o755))
	t.Setenv("PATH", dir)
	return argsFile
}

func TestBuildFlake(t *testing.T) {
	argsFile := fakeNix(t, `echo building... >&2
echo '[{"drvPath":"/nix/store/aaa-nixos-system-vm.drv","outputs":{"out":"/nix/store/bbb-nixos-system-vm"}}]'`)
	var stderr strings.Builder
	got, err := Build(context.Background(), "github:o/r#vm", &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got != "/nix/store/bbb-nixos-system-vm" {
		t.Errorf("toplevel = %q", got)
	}
	if stderr.String() != "building...\n" {
		t.Errorf("nix's stderr was not passed on: %q", stderr.String())
	}
	args, err := os.ReadFile(argsFile)
	must(t, err)
	want := strings.Join(Command("github:o/r#vm")[1:], "\n") + "\n"
	if string(args) != want {
		t.Errorf("nix ran with\n%s\nwant\n%s", args, want)
	}
}

func TestBuildFile(t *testing.T) {
	argsFile := fakeNix(t, `echo '[{"drvPath":"/nix/store/aaa-t.drv","outputs":{"out":"/nix/store/bbb-t"}}]'`)
	got, err := Build(context.Background(), "./vm.nix", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != "/nix/store/bbb-t" {
		t.Errorf("toplevel = %q", got)
	}
	args, err := os.ReadFile(argsFile)
	must(t, err)
	if !strings.HasSuffix(string(args), "--file\n./vm.nix\n") {
		t.Errorf("nix ran with\n%s", args)
	}
}

func TestBuildFails(t *testing.T) {
	fakeNix(t, `echo "error: flake 'path:/x' does not provide attribute" >&2; exit 1`)
	var stderr strings.Builder
	_, err := Build(context.Background(), ".#nope", &stderr)
	if err == nil {
		t.Fatal("Build succeeded although nix failed")
	}
	if !strings.Contains(err.Error(), "building .#nope: nix build failed") {
		t.Errorf("error = %v", err)
	}
	if !strings.Contains(stderr.String(), "does not provide attribute") {
		t.Errorf("nix's message was lost: %q", stderr.String())
	}
}

func TestBuildCancelled(t *testing.T) {
	fakeNix(t, `exec sleep 30`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Build(ctx, ".#vm", nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
}

func TestParseBuildJSON(t *testing.T) {
	tests := []struct {
		name, out, want, err string
	}{
		{"one", `[{"drvPath":"/d.drv","outputs":{"out":"/nix/store/x"}}]`, "/nix/store/x", ""},
		{"newer nix adds fields", `[{"drvPath":"/d.drv","outputs":{"out":"/nix/store/x"},"startTime":1,"stopTime":2}]`, "/nix/store/x", ""},
		{"out among several", `[{"drvPath":"/d.drv","outputs":{"dev":"/nix/store/d","out":"/nix/store/x"}}]`, "/nix/store/x", ""},
		{"single other output", `[{"drvPath":"/d.drv","outputs":{"bin":"/nix/store/b"}}]`, "/nix/store/b", ""},
		{"a store path", `[{"path":"/nix/store/p"}]`, "/nix/store/p", ""},
		{"several outputs, no out", `[{"drvPath":"/d.drv","outputs":{"a":"/x","b":"/y"}}]`, "", "has the outputs a, b"},
		{"two systems", `[{"drvPath":"/d.drv","outputs":{"out":"/x"}},{"drvPath":"/e.drv","outputs":{"out":"/y"}}]`, "", "names 2 systems"},
		{"nothing", `[]`, "", "no output path"},
		{"not json", `/nix/store/x`, "", "cannot read"},
	}
	for _, tt := range tests {
		got, err := parseBuildJSON("T", []byte(tt.out))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestBuildWithRealNix builds a stand-in "toplevel" (one file, made by
// /bin/sh) through every installable form, with the nix on $PATH. It runs
// only when SONIX_TEST_NIX=1, since it writes to the Nix store.
func TestBuildWithRealNix(t *testing.T) {
	if os.Getenv("SONIX_TEST_NIX") != "1" {
		t.Skip("set SONIX_TEST_NIX=1 to build with the real nix")
	}
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skip("nix is not on $PATH")
	}
	system := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH] + "-" + runtime.GOOS
	drv := `derivation { name = "sonix-nixbuild-test"; system = "` + system + `"; builder = "/bin/sh"; args = [ "-c" "echo '{}' > $out" ]; }`
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "flake.nix"),
		[]byte("{ outputs = { self }: { nixosConfigurations.vm.config.system.build.toplevel = "+drv+"; }; }\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "vm.nix"), []byte(drv+"\n"), 0o644))
	t.Setenv("NIX_CONFIG", "substituters =\n") // nothing to fetch

	var want string
	for _, target := range []string{"path:" + dir + "#vm", dir + "#nixosConfigurations.vm", filepath.Join(dir, "vm.nix")} {
		if !IsInstallable(target) {
			t.Errorf("IsInstallable(%q) = false", target)
		}
		var stderr strings.Builder
		got, err := Build(context.Background(), target, &stderr)
		if err != nil {
			t.Fatalf("Build(%q): %v\n%s", target, err, stderr.String())
		}
		if _, err := os.Stat(got); err != nil {
			t.Errorf("Build(%q) = %q, which is not there: %v", target, got, err)
		}
		t.Logf("%s -> %s", target, got)
		if want == "" {
			want = got
		} else if got != want {
			t.Errorf("Build(%q) = %q, want %q (the same derivation)", target, got, want)
		}
	}
	if _, err := Build(context.Background(), dir+"#nope", nil); err == nil {
		t.Error("building a missing attribute succeeded")
	}
}
