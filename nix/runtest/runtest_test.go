package runtest

// The builder of lib.runTest, run for real in a sandbox shaped like Nix's.
//
// What Nix would do, done here without Nix:
//
//   - nix/tests/run-test-env.nix evaluates nix/run-test.nix (with
//     nix-instantiate, stand-in packages and a dummy store) for a test
//     whose systems and Go test binaries are store paths made here, and
//     gives the builder, its arguments, the environment Nix would give it
//     ($out included), and the store paths of its inputs;
//   - this test makes those store paths: the test system
//     (examples/testsystem: a NixOS-shaped busybox system with the real
//     guest agent, Debian's kernel), the Go test binaries (built with
//     nix/run-test/build-go-tests.sh, as lib.buildGoTests does), sonix-run,
//     gotestsum, test2json, the Rust virtiofsd (relocated into its store
//     path), the runner's scripts, the test's script; bash, coreutils and
//     QEMU are the host's, each store path holding only links to its own
//     programs, so that the builder's PATH has no more than Nix's would;
//   - scripts/nix-sandbox runs the builder with that environment: a non-root
//     uid, no network, /build private, HOME unwritable, no XDG_RUNTIME_DIR,
//     /nix/store holding only those paths (read-only) and $out, /dev without
//     kvm unless the host has KVM.
//
// Then it reads what the builder left in $out: junit.xml, test.log,
// artifacts/, nix-support/hydra-build-products (and nix-support/failed).
//
// Needs bubblewrap, nix-instantiate (Debian's nix-bin), the Rust virtiofsd
// ($SONIX_VIRTIOFSD, or scripts/install-rust-virtiofsd's), QEMU, the test
// system's inputs (scripts/install-test-deps), gotestsum (on PATH,
// $SONIX_TEST_GOTESTSUM, or fetched with `go install`) and patchelf when
// the virtiofsd lies outside /usr. Without bubblewrap, nix-instantiate or
// the Rust virtiofsd it skips, saying so, except in CI ($CI set), where it
// fails. SONIX_RUNTEST_KEEP=1 keeps what it made (each run's $out and
// build log) and says where.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

// gotestsumVersion is the gotestsum fetched when none is installed (nixpkgs
// packages it as pkgs.gotestsum).
const gotestsumVersion = "gotest.tools/gotestsum@v1.13.0"

var (
	repo     string // the checkout
	workRoot string // everything this package makes, removed by TestMain
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repo = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	code := m.Run()
	if workRoot != "" {
		if os.Getenv("SONIX_RUNTEST_KEEP") != "" {
			fmt.Fprintf(os.Stderr, "runtest: kept %s (the store, each run's $out and build log)\n", workRoot)
		} else {
			os.RemoveAll(workRoot)
		}
	}
	os.Exit(code)
}

// missing skips the test for want of a tool, saying what to install;
// in CI ($CI set) it fails it instead: CI installs them.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI must have it)", msg)
	}
	t.Skip(msg)
}

// world is what every run shares: the prerequisites found, and the store
// made once.
type world struct {
	skip string // why the tests cannot run here (missing)
	err  error  // what went wrong making it

	arch       string // the guest's, the host's
	qemu       string // host path of qemu-system-ARCH
	virtiofsd  string // host path of the Rust virtiofsd
	gotestsum  string
	bins       string // sonix-run and test2json, built here
	sysStore   string // the test system's store: bound at /nix/store
	toolStore  string // the tools' store paths: bound at /nix/store too
	outs       string // the runs' $out directories
	toplevel   string // the test system's toplevel, as a /nix/store path
	goVersion  string
	kvm        bool // the sandbox's user can use the host's /dev/kvm: it gets it (--kvm)
	mu         sync.Mutex
	goTestsFor map[string]string // package list -> store path of the binaries
}

var (
	worldOnce sync.Once
	theWorld  world
)

func setup(t *testing.T) *world {
	t.Helper()
	worldOnce.Do(func() { theWorld.make() })
	w := &theWorld
	if w.skip != "" {
		missing(t, "%s", w.skip)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	return w
}

func (w *world) make() {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if runtime.GOOS != "linux" || arch == "" {
		w.skip = "the Nix-shaped sandbox is Linux's, on x86_64 or aarch64"
		return
	}
	w.arch = arch
	for _, tool := range []struct{ name, hint string }{
		{"bwrap", "bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"},
		{"nix-instantiate", "nix-instantiate (Debian/Ubuntu: apt-get install nix-bin)"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			w.skip = "needs " + tool.hint
			return
		}
	}
	qemu, err := exec.LookPath("qemu-system-" + arch)
	if err != nil {
		w.skip = "qemu-system-" + arch + " is not installed (scripts/install-test-deps)"
		return
	}
	if w.qemu, err = filepath.EvalSymlinks(qemu); err != nil {
		w.err = err
		return
	}
	if w.virtiofsd, w.skip = findRustVirtiofsd(); w.skip != "" {
		return
	}
	in, err := testsystem.FindInputs(arch)
	if err != nil {
		w.err = fmt.Errorf("test system inputs missing (run scripts/install-test-deps): %w", err)
		return
	}
	// The sandbox's uid gets /dev/kvm's group (scripts/nix-sandbox), so
	// KVM is the build user's when the group or everyone may use it; a
	// /dev/kvm only root may open (0600) is a builder without the feature.
	if fi, err := os.Stat("/dev/kvm"); err == nil && fi.Mode()&os.ModeCharDevice != 0 &&
		(fi.Mode().Perm()&0o060 == 0o060 || fi.Mode().Perm()&0o006 == 0o006) {
		w.kvm = true
	}

	// Everything in one directory that the sandbox's uid (another one
	// when this runs as root) may read.
	root, err := os.MkdirTemp("", "sonix-runtest-")
	if err == nil {
		err = os.Chmod(root, 0o755)
	}
	if err != nil {
		w.err = err
		return
	}
	workRoot = root
	w.bins = filepath.Join(root, "bin")
	w.toolStore = filepath.Join(root, "tools")
	w.outs = filepath.Join(root, "outs")
	for _, d := range []string{w.bins, w.toolStore, w.outs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			w.err = err
			return
		}
	}
	w.goTestsFor = map[string]string{}

	// The sandbox works here at all (user namespaces, setpriv as root).
	if out, err := sandbox(context.Background(), "--host-tools", "--", "/usr/bin/true"); err != nil {
		w.skip = fmt.Sprintf("scripts/nix-sandbox cannot make a sandbox here (user namespaces?): %v: %s", err, out)
		return
	}

	sys, err := testsystem.Build(filepath.Join(root, "sys"), in, testsystem.Options{Salt: fmt.Sprint(time.Now().UnixNano())})
	if err != nil {
		w.err = err
		return
	}
	w.sysStore = sys.StoreDir
	w.toplevel = "/nix/store/" + filepath.Base(sys.Toplevel)

	gover, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		w.err = fmt.Errorf("go env GOVERSION: %v", err)
		return
	}
	w.goVersion = strings.TrimSpace(string(gover))

	builds := [][]string{
		{"build", "-trimpath", "-o", filepath.Join(w.bins, "sonix-run"), "./cmd/sonix-run"},
		{"build", "-trimpath", "-o", filepath.Join(w.bins, "test2json"), "cmd/test2json"},
	}
	for _, args := range builds {
		if err := goCmd(repo, nil, args...); err != nil {
			w.err = err
			return
		}
	}
	if w.gotestsum, err = findGotestsum(w.bins); err != nil {
		w.err = err
	}
}

// findRustVirtiofsd is $SONIX_VIRTIOFSD, else what
// scripts/install-rust-virtiofsd left in the cache, else a virtiofsd on
// PATH or in /usr/libexec or /usr/lib: the first that is the Rust one
// with --readonly (1.13 or newer). The second result says why there is
// none.
func findRustVirtiofsd() (string, string) {
	var candidates []string
	if p := os.Getenv("SONIX_VIRTIOFSD"); p != "" {
		candidates = append(candidates, p)
	}
	if cache, err := testsystem.CacheDir(); err == nil {
		found, _ := filepath.Glob(filepath.Join(cache, "virtiofsd-rust", "*", "virtiofsd"))
		candidates = append(candidates, found...)
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/libexec/virtiofsd", "/usr/lib/virtiofsd")
	for _, c := range candidates {
		help, _ := exec.Command(c, "--help").CombinedOutput()
		if bytes.Contains(help, []byte("--shared-dir")) && bytes.Contains(help, []byte("--readonly")) {
			return c, ""
		}
	}
	return "", "needs the Rust virtiofsd 1.13 or newer (scripts/install-rust-virtiofsd, then SONIX_VIRTIOFSD=its last line; Debian 13+: apt-get install virtiofsd); tried " + strings.Join(candidates, ", ")
}

// findGotestsum is $SONIX_TEST_GOTESTSUM, gotestsum on PATH, or one
// fetched into dir with go install (from the Go module proxy or cache).
func findGotestsum(dir string) (string, error) {
	if p := os.Getenv("SONIX_TEST_GOTESTSUM"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("gotestsum"); err == nil {
		return p, nil
	}
	if err := goCmd(dir, []string{"GOBIN=" + dir, "GOFLAGS=-mod=mod"}, "install", gotestsumVersion); err != nil {
		return "", fmt.Errorf("no gotestsum on PATH and fetching it failed (install it, or set SONIX_TEST_GOTESTSUM): %w", err)
	}
	return filepath.Join(dir, "gotestsum"), nil
}

func goCmd(dir string, env []string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// goTests builds the test binaries of packages as lib.buildGoTests does
// (nix/run-test/build-go-tests.sh), into a store path of the tool store.
func (w *world) goTests(t *testing.T, packages ...string) string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	key := strings.Join(packages, " ")
	if p, ok := w.goTestsFor[key]; ok {
		return p
	}
	name := storeName("go-tests-"+key, "go-tests")
	cmd := exec.Command("bash", append([]string{filepath.Join(repo, "nix/run-test/build-go-tests.sh"), filepath.Join(w.toolStore, name)}, packages...)...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-trimpath")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-go-tests.sh %s: %v\n%s", key, err, out)
	}
	w.goTestsFor[key] = "/nix/store/" + name
	return w.goTestsFor[key]
}

// storeName is a store path's base name: 32 characters of Nix's base-32
// alphabet from key, then name.
func storeName(key, name string) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	sum := sha256.Sum256([]byte(key))
	var b strings.Builder
	for i := 0; i < 32; i++ {
		b.WriteByte(alphabet[sum[i]%32])
	}
	return b.String() + "-" + name
}

// sandbox runs scripts/nix-sandbox with args and returns its combined
// output.
func sandbox(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "scripts", "nix-sandbox"), args...)
	cmd.WaitDelay = 10 * time.Second
	return cmd.CombinedOutput()
}

// spec is the test lib.runTest is evaluated for (nix/tests/run-test-env.nix).
type spec struct {
	Name          string            `json:"name"`
	Systems       map[string]string `json:"systems"`
	GoTests       *string           `json:"goTests"`
	GoVersion     string            `json:"goVersion"`
	Script        *string           `json:"script"`
	TestFlags     []string          `json:"testFlags"`
	Timeout       int               `json:"timeout"`
	AllowTCG      bool              `json:"allowTCG"`
	RecordFailure bool              `json:"recordFailure"`
	ExtraFiles    map[string]string `json:"extraFiles"`
}

// evaluation is what run-test-env.nix gives.
type evaluation struct {
	Builder                string            `json:"builder"`
	Args                   []string          `json:"args"`
	Env                    map[string]string `json:"env"`
	RequiredSystemFeatures []string          `json:"requiredSystemFeatures"`
	Store                  map[string]string `json:"store"`
	ScriptText             *string           `json:"scriptText"`
	Interactive            struct {
		Name string `json:"name"`
		Text string `json:"text"`
	} `json:"interactive"`
}

func evaluate(t *testing.T, s spec) evaluation {
	t.Helper()
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json",
		"--store", "dummy://", "--option", "build-users-group", "",
		filepath.Join(repo, "nix/tests/run-test-env.nix"), "--argstr", "spec", string(js))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("evaluating lib.runTest (nix/tests/run-test-env.nix): %v\n%s", err, stderr.String())
	}
	var ev evaluation
	if err := json.Unmarshal(out, &ev); err != nil {
		t.Fatalf("run-test-env.nix: %v\n%s", err, out)
	}
	return ev
}

// materialize makes the store paths the evaluation names, in the tool
// store (those that exist already are kept: the same path, the same
// content).
func (w *world) materialize(t *testing.T, ev evaluation) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	paths := make([]string, 0, len(ev.Store))
	for p := range ev.Store {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		kind := ev.Store[p]
		dst := filepath.Join(w.toolStore, strings.TrimPrefix(p, "/nix/store/"))
		if !strings.HasPrefix(p, "/nix/store/") || strings.Contains(strings.TrimPrefix(p, "/nix/store/"), "/") {
			t.Fatalf("run-test-env.nix: %s (%s) is not a store path", p, kind)
		}
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		var err error
		switch kind {
		case "bash":
			err = linkPrograms(dst, []string{mustLook(t, "bash")})
		case "coreutils":
			err = linkPrograms(dst, coreutilsPrograms(t))
		case "qemu":
			err = linkPrograms(dst, []string{w.qemu})
		case "gotestsum":
			err = copyProgram(w.gotestsum, filepath.Join(dst, "bin", "gotestsum"))
		case "test2json":
			err = copyProgram(filepath.Join(w.bins, "test2json"), filepath.Join(dst, "bin", "test2json"))
		case "sonix-run":
			err = copyProgram(filepath.Join(w.bins, "sonix-run"), filepath.Join(dst, "bin", "sonix-run"))
		case "virtiofsd":
			err = relocateVirtiofsd(w.virtiofsd, dst, p)
		case "interactive":
			// As writeShellScriptBin writes it: bin/NAME, run by the
			// store's bash.
			var bash string
			for q, k := range ev.Store {
				if k == "bash" {
					bash = q + "/bin/bash"
				}
			}
			prog := filepath.Join(dst, "bin", ev.Interactive.Name)
			if err = os.MkdirAll(filepath.Dir(prog), 0o755); err == nil {
				err = os.WriteFile(prog, []byte("#!"+bash+"\n"+ev.Interactive.Text), 0o555)
			}
		case "runner":
			err = run("cp", "-R", filepath.Join(repo, "nix", "run-test"), dst)
		case "script":
			if ev.ScriptText == nil {
				t.Fatalf("run-test-env.nix names a script but gives no text")
			}
			err = os.WriteFile(dst, []byte(*ev.ScriptText), 0o444)
		default:
			t.Fatalf("run-test-env.nix: unknown kind %q of %s", kind, p)
		}
		if err != nil {
			t.Fatalf("making %s (%s): %v", p, kind, err)
		}
		if err := run("chmod", "-R", "a+rX", dst); err != nil {
			t.Fatal(err)
		}
	}
}

func mustLook(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

// coreutilsPrograms are the host's coreutils programs: those of Debian's
// coreutils package, else the usual ones found on PATH.
func coreutilsPrograms(t *testing.T) []string {
	t.Helper()
	var progs []string
	if out, err := exec.Command("dpkg-query", "-L", "coreutils").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if (strings.HasPrefix(l, "/usr/bin/") || strings.HasPrefix(l, "/bin/")) && !strings.HasSuffix(l, "/") {
				if real, err := filepath.EvalSymlinks(l); err == nil {
					progs = append(progs, real)
				}
			}
		}
	}
	if len(progs) > 0 {
		return progs
	}
	for _, n := range strings.Fields("basename cat chmod cp cut date dirname echo env head id kill ln ls mkdir mktemp mv nproc printf pwd rm sleep sort stat tail tee test timeout touch tr true false uname wc") {
		if p, err := exec.LookPath(n); err == nil {
			progs = append(progs, p)
		}
	}
	return progs
}

// linkPrograms makes dir/bin with a link to each program, by its name:
// the host's own programs (under /usr, which the sandbox binds) standing
// for a package's.
func linkPrograms(dir string, programs []string) error {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	for _, p := range programs {
		if !strings.HasPrefix(p, "/usr/") {
			return fmt.Errorf("%s is not under /usr, which is all of the host the sandbox sees", p)
		}
		link := filepath.Join(dir, "bin", filepath.Base(p))
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(p, link); err != nil {
			return err
		}
	}
	return nil
}

func copyProgram(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return run("cp", src, dst)
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// relocateVirtiofsd puts the virtiofsd at bin into the store path dir
// (storePath inside the sandbox) as bin/virtiofsd. One whose loader and
// libraries are the system's (under /usr or /lib) is copied as it is; one
// with its own (scripts/install-rust-virtiofsd's: trixie's glibc beside
// it) is copied with the directory it lies in, and its loader and library
// path are made to point into the store path, as Nix would build it.
func relocateVirtiofsd(bin, dir, storePath string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				f.Close()
				return err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	rpath, _ := f.DynString(elf.DT_RUNPATH)
	if old, _ := f.DynString(elf.DT_RPATH); len(old) > 0 {
		rpath = append(rpath, old...)
	}
	f.Close()
	paths := []string{}
	if interp != "" {
		paths = append(paths, interp)
	}
	for _, r := range rpath {
		paths = append(paths, strings.Split(r, ":")...)
	}
	system := func(p string) bool {
		return strings.HasPrefix(p, "/usr/") || strings.HasPrefix(p, "/lib/") || strings.HasPrefix(p, "/lib64/")
	}
	own := false
	for _, p := range paths {
		if !system(p) {
			own = true
		}
	}
	dst := filepath.Join(dir, "bin", "virtiofsd")
	if !own {
		return copyProgram(bin, dst)
	}
	src := filepath.Dir(bin)
	for _, p := range paths {
		if !system(p) && !strings.HasPrefix(p, src+"/") {
			return fmt.Errorf("%s's loader or libraries (%s) lie neither under /usr nor beside it in %s; cannot relocate it", bin, p, src)
		}
	}
	if _, err := exec.LookPath("patchelf"); err != nil {
		return fmt.Errorf("patchelf is needed to relocate %s (scripts/install-rust-virtiofsd installs it)", bin)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == "debs" || e.Name() == filepath.Base(bin) {
			continue
		}
		if err := run("cp", "-a", filepath.Join(src, e.Name()), dir); err != nil {
			return err
		}
	}
	if err := copyProgram(bin, dst); err != nil {
		return err
	}
	moved := func(p string) string {
		if system(p) {
			return p
		}
		return storePath + strings.TrimPrefix(p, src)
	}
	args := []string{}
	if interp != "" {
		args = append(args, "--set-interpreter", moved(interp))
	}
	if len(rpath) > 0 {
		var rs []string
		for _, r := range rpath {
			for _, p := range strings.Split(r, ":") {
				rs = append(rs, moved(p))
			}
		}
		args = append(args, "--set-rpath", strings.Join(rs, ":"))
	}
	return run("patchelf", append(args, dst)...)
}

// result is what one run of the builder left.
type result struct {
	status int
	log    string // the builder's output (the build log)
	out    string // $out, on the host
	outIn  string // $out, in the sandbox
}

// runBuilder evaluates lib.runTest for s, makes its inputs, and runs its
// builder in the sandbox (with /dev/kvm when kvm).
func (w *world) runBuilder(t *testing.T, s spec, kvm bool) (result, evaluation) {
	t.Helper()
	ev := evaluate(t, s)
	w.materialize(t, ev)
	outIn := ev.Env["out"]
	out := filepath.Join(w.outs, filepath.Base(outIn))
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}
	args := []string{"--store", w.sysStore, "--store", w.toolStore, "--out", out, "--host-tools"}
	if kvm {
		args = append(args, "--kvm")
	}
	names := make([]string, 0, len(ev.Env))
	for k := range ev.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k != "out" {
			args = append(args, "--env", k+"="+ev.Env[k])
		}
	}
	args = append(append(args, "--", ev.Builder), ev.Args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.Timeout+120)*time.Second)
	defer cancel()
	began := time.Now()
	log, err := sandbox(ctx, args...)
	status := 0
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("running the builder: %v\n%s", err, log)
		}
		status = exit.ExitCode()
	}
	t.Logf("builder of %s: status %d after %v", s.Name, status, time.Since(began).Round(time.Second))
	if err := os.WriteFile(filepath.Join(w.outs, s.Name+".build.log"), log, 0o644); err != nil {
		t.Fatal(err)
	}
	return result{status: status, log: string(log), out: out, outIn: outIn}, ev
}

// tail is the end of a build log for failure messages.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Classname string `xml:"classname,attr"`
	Name      string `xml:"name,attr"`
	Failure   *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
}

func readJUnit(t *testing.T, r result) junitSuites {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.out, "junit.xml"))
	if err != nil {
		t.Fatalf("no junit.xml: %v\nthe build log's end:\n%s", err, tail(r.log, 60))
	}
	var j junitSuites
	if err := xml.Unmarshal(b, &j); err != nil {
		t.Fatalf("junit.xml: %v\n%s", err, b)
	}
	return j
}

// cases is the test cases of junit.xml by "suite test", with their
// failure text ("" for a pass, "skip" for a skip).
func cases(j junitSuites) map[string]string {
	m := map[string]string{}
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			v := "pass"
			switch {
			case c.Failure != nil:
				v = "FAIL: " + c.Failure.Text
			case c.Skipped != nil:
				v = "skip"
			}
			m[s.Name+" "+c.Name] = v
		}
	}
	return m
}

// checkProducts checks nix-support/hydra-build-products: each line names a
// product in $out that is there.
func checkProducts(t *testing.T, r result) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.out, "nix-support", "hydra-build-products"))
	if err != nil {
		t.Fatalf("no hydra-build-products: %v", err)
	}
	want := map[string]bool{"file junit junit.xml": false, "file testlog test.log": false, "file json test.json": false, "report artifacts artifacts": false}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || !strings.HasPrefix(f[2], r.outIn+"/") {
			t.Errorf("hydra-build-products: %q is not TYPE SUBTYPE $out/PATH", l)
			continue
		}
		rel := strings.TrimPrefix(f[2], r.outIn+"/")
		if _, err := os.Stat(filepath.Join(r.out, rel)); err != nil {
			t.Errorf("hydra-build-products: %q: %v", l, err)
		}
		key := f[0] + " " + f[1] + " " + rel
		if _, ok := want[key]; !ok {
			t.Errorf("hydra-build-products: unexpected %q", l)
		}
		want[key] = true
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("hydra-build-products lacks %q:\n%s", k, b)
		}
	}
}

func (w *world) spec(name string) spec {
	return spec{
		Name:       name,
		Systems:    map[string]string{"machine": w.toplevel},
		GoVersion:  w.goVersion,
		TestFlags:  []string{},
		ExtraFiles: map[string]string{},
		Timeout:    900,
		AllowTCG:   !w.kvm,
	}
}

func str(s string) *string { return &s }

func readScript(t *testing.T, rel string) *string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, rel))
	if err != nil {
		t.Fatal(err)
	}
	return str(string(b))
}

// A passing test: the examples' Go tests (one VM; two on a LAN) and the
// example script, run by the builder in the sandbox, with the systems
// given as lib.runTest gives them (harness.System reads them).
func TestBuilderPassingTest(t *testing.T) {
	w := setup(t)
	s := w.spec("passing")
	s.Systems["server"] = w.toplevel
	s.Systems["client"] = w.toplevel
	s.GoTests = str(w.goTests(t, "./examples/harness", "./examples/multivm"))
	s.TestFlags = []string{"-test.run=^(TestThreeCommandsOneBoot|TestClientFetchesPage)$"}
	s.Script = readScript(t, "examples/harness/smoke.sh")
	r, ev := w.runBuilder(t, s, w.kvm)
	if r.status != 0 {
		t.Fatalf("the builder exited %d, want 0; the build log's end:\n%s", r.status, tail(r.log, 80))
	}

	wantFeatures := "nixos-test kvm"
	if s.AllowTCG {
		wantFeatures = "nixos-test"
		if !strings.Contains(r.log, "the VMs run under TCG, emulated, typically 5 to 30 times slower than under KVM (allowTCG = true)") {
			t.Errorf("the log does not say that the VMs run under TCG:\n%s", tail(r.log, 40))
		}
	} else if !strings.Contains(r.log, "/dev/kvm is usable") {
		t.Errorf("the log does not say that KVM is used:\n%s", tail(r.log, 40))
	}
	if got := strings.Join(ev.RequiredSystemFeatures, " "); got != wantFeatures {
		t.Errorf("requiredSystemFeatures %q, want %q", got, wantFeatures)
	}

	j := readJUnit(t, r)
	got := cases(j)
	want := map[string]string{
		"github.com/sonix-run/sonix-run/examples/harness TestThreeCommandsOneBoot": "pass",
		"github.com/sonix-run/sonix-run/examples/multivm TestClientFetchesPage":    "pass",
		"passing script": "pass",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("junit.xml's test cases:\n got %v\nwant %v", got, want)
	}
	if j.Tests != 3 || j.Failures != 0 {
		t.Errorf("junit.xml: %d tests, %d failures; want 3, 0", j.Tests, j.Failures)
	}
	checkProducts(t, r)
	if _, err := os.Stat(filepath.Join(r.out, "nix-support", "failed")); err == nil {
		t.Error("nix-support/failed exists after a pass")
	}
	// Passing tests leave no artifacts.
	if entries, err := os.ReadDir(filepath.Join(r.out, "artifacts")); err != nil || len(entries) != 0 {
		t.Errorf("artifacts/ after a pass: %v %v", entries, err)
	}
	tl, err := os.ReadFile(filepath.Join(r.out, "test.log"))
	if err != nil || !bytes.Contains(tl, []byte("=== RUN   TestThreeCommandsOneBoot")) || !bytes.Contains(tl, []byte("--- PASS: TestClientFetchesPage")) {
		t.Errorf("test.log lacks the Go tests' verbose output: %v\n%s", err, tail(string(tl), 20))
	}
	if !strings.Contains(r.log, "sonix-run-test: test passing passed in ") {
		t.Errorf("the build log does not end with the verdict:\n%s", tail(r.log, 10))
	}
}

// A failing test fails the build, and leaves in $out (which Nix would
// drop; recordFailure keeps it) junit.xml with each failure's message and
// console tail, and the failed tests' artifacts.
func TestBuilderFailingTest(t *testing.T) {
	w := setup(t)
	s := w.spec("failing")
	s.GoTests = str(w.goTests(t, "./nix/runtest/testdata/failing"))
	s.TestFlags = []string{"-test.run=^TestDeliberateFailure$"}
	s.Script = readScript(t, "nix/runtest/testdata/failing.sh")
	r, _ := w.runBuilder(t, s, w.kvm)
	if r.status != 1 {
		t.Fatalf("the builder exited %d, want 1; the build log's end:\n%s", r.status, tail(r.log, 80))
	}
	if !strings.Contains(r.log, "set recordFailure = true to keep it") {
		t.Errorf("the build log does not say how to keep the output:\n%s", tail(r.log, 10))
	}

	j := readJUnit(t, r)
	got := cases(j)
	const pkg = "github.com/sonix-run/sonix-run/nix/runtest/testdata/failing "
	if got[pkg+"TestDeliberateFailure/passes"] != "pass" {
		t.Errorf("TestDeliberateFailure/passes: %q, want a pass", got[pkg+"TestDeliberateFailure/passes"])
	}
	for name, wants := range map[string][]string{
		// The harness's message: the call, the status, the output, the
		// last console lines (the test system's agent says it served).
		pkg + "TestDeliberateFailure/fails": {"exit status 3, want 0", "deliberate-go-marker", "console lines:", "sonix-run-agent"},
		pkg + "TestDeliberateFailure":       {"--- FAIL: TestDeliberateFailure"},
		// The script's output, its status, the VM's console.
		"failing script": {"deliberate-script-marker", "the script failed with status 4", "last console lines of VM machine", "sonix-test: root-fstype=tmpfs"},
	} {
		v := got[name]
		if !strings.HasPrefix(v, "FAIL: ") {
			t.Errorf("%s: %.200q, want a failure", name, v)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(v, w) {
				t.Errorf("%s: the failure lacks %q:\n%s", name, w, v)
			}
		}
	}
	if len(got) != 4 || j.Failures != 3 {
		t.Errorf("junit.xml: %d cases, %d failures; want 4, 3: %v", len(got), j.Failures, got)
	}
	if strings.Contains(got["failing script"], "not reached") {
		t.Error("the script went on after a failed command")
	}
	checkProducts(t, r)

	// The artifacts: the harness's per failed test, the script's.
	art := filepath.Join(r.out, "artifacts")
	var files []string
	filepath.WalkDir(art, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, art+"/"))
		}
		return nil
	})
	wantFiles := []string{
		"TestDeliberateFailure.fails/*.console.log",
		"TestDeliberateFailure.fails/*.commands.log",
		"TestDeliberateFailure.fails/*.reproduce.sh",
		"script/machine.console.log",
		"script/machine.reproduce.sh",
		"script/machine.sonix-run.log",
		"script/commands.log",
	}
	for _, pat := range wantFiles {
		found := false
		for _, f := range files {
			if ok, _ := filepath.Match(pat, f); ok {
				found = true
			}
		}
		if !found {
			t.Errorf("artifacts/ has no %s: %v", pat, files)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(art, "script", "machine.reproduce.sh")); !bytes.Contains(b, []byte("sonix-run --name machine")) || !bytes.Contains(b, []byte(w.toplevel)) {
		t.Errorf("script/machine.reproduce.sh: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(art, "script", "commands.log")); !bytes.Contains(b, []byte("sonix-run exec machine -- sh -c 'echo deliberate-script-marker; exit 4'")) {
		t.Errorf("script/commands.log lacks the failed command:\n%s", b)
	}
}

// recordFailure: the build succeeds, and nix-support/failed says it
// failed (Hydra's "failed with output"). No VM needed.
func TestBuilderRecordedFailure(t *testing.T) {
	w := setup(t)
	s := w.spec("recorded")
	s.GoTests = str(w.goTests(t, "./nix/runtest/testdata/failing"))
	s.TestFlags = []string{"-test.run=^TestWithoutVM$"}
	s.RecordFailure = true
	r, _ := w.runBuilder(t, s, w.kvm)
	if r.status != 0 {
		t.Fatalf("the builder exited %d, want 0 (recordFailure); the build log's end:\n%s", r.status, tail(r.log, 40))
	}
	if b, err := os.ReadFile(filepath.Join(r.out, "nix-support", "failed")); err != nil || strings.TrimSpace(string(b)) == "0" {
		t.Errorf("nix-support/failed: %q, %v; want gotestsum's non-zero status", b, err)
	}
	got := cases(readJUnit(t, r))
	if v := got["github.com/sonix-run/sonix-run/nix/runtest/testdata/failing TestWithoutVM"]; !strings.Contains(v, "deliberate failure without a VM") {
		t.Errorf("TestWithoutVM: %q", v)
	}
	if !strings.Contains(r.log, "recorded in nix-support/failed (recordFailure = true)") {
		t.Errorf("the build log does not say the failure was recorded:\n%s", tail(r.log, 10))
	}
	checkProducts(t, r)
}

// Without allowTCG the test needs the kvm system feature: in a sandbox
// without /dev/kvm (a builder without the feature) the builder refuses at
// once, saying why and what to do, rather than running for ten times as
// long.
func TestBuilderNeedsKVM(t *testing.T) {
	w := setup(t)
	s := w.spec("needs-kvm")
	s.AllowTCG = false
	s.GoTests = str(w.goTests(t, "./nix/runtest/testdata/failing"))
	r, ev := w.runBuilder(t, s, false)
	if got := strings.Join(ev.RequiredSystemFeatures, " "); got != "nixos-test kvm" {
		t.Errorf("requiredSystemFeatures %q, want nixos-test kvm", got)
	}
	if r.status != 1 || !strings.Contains(r.log, "there is no /dev/kvm in the build sandbox, but this test requires the kvm system feature") ||
		!strings.Contains(r.log, "set allowTCG = true") {
		t.Errorf("status %d, log:\n%s", r.status, tail(r.log, 10))
	}
	if _, err := os.Stat(filepath.Join(r.out, "junit.xml")); err == nil {
		t.Error("junit.xml written although no test ran")
	}
}

// A test of a script alone, which uses extraFiles: copies in the working
// directory, writable, directories whole.
func TestBuilderScriptAndExtraFiles(t *testing.T) {
	w := setup(t)
	w.mu.Lock()
	file := storeName("hello", "hello.txt")
	dir := storeName("data", "data")
	err := os.WriteFile(filepath.Join(w.toolStore, file), []byte("hello\n"), 0o444)
	if err == nil {
		err = os.MkdirAll(filepath.Join(w.toolStore, dir, "inner"), 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(w.toolStore, dir, "inner", "x"), []byte("x\n"), 0o444)
	}
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	s := w.spec("script-only")
	s.ExtraFiles = map[string]string{"hello.txt": "/nix/store/" + file, "testdata/data": "/nix/store/" + dir}
	s.Script = str(`test "$(cat hello.txt)" = hello
test "$(cat testdata/data/inner/x)" = x
echo more >>hello.txt
echo "working directory: $PWD"
`)
	r, _ := w.runBuilder(t, s, w.kvm)
	if r.status != 0 {
		t.Fatalf("the builder exited %d, want 0; the build log's end:\n%s", r.status, tail(r.log, 40))
	}
	j := readJUnit(t, r)
	if got := fmt.Sprint(cases(j)); got != "map[script-only script:pass]" {
		t.Errorf("junit.xml's cases: %s", got)
	}
	if !strings.Contains(r.log, "working directory: /build/work") {
		t.Errorf("the script did not run in /build/work:\n%s", tail(r.log, 20))
	}
	checkProducts(t, r)
}

// The test's timeout stops a script that does not end, and the failure
// says so (the script waits for nothing but the timeout, 3 s).
func TestBuilderTimeout(t *testing.T) {
	w := setup(t)
	s := w.spec("timeout")
	s.Timeout = 3
	s.Script = str("echo waiting forever\nsleep 600\n")
	began := time.Now()
	r, ev := w.runBuilder(t, s, w.kvm)
	if r.status != 1 {
		t.Fatalf("the builder exited %d, want 1; the build log's end:\n%s", r.status, tail(r.log, 40))
	}
	if took := time.Since(began); took > 60*time.Second {
		t.Errorf("the builder took %v with a timeout of 3s", took)
	}
	if ev.Env["testTimeout"] != "3" {
		t.Errorf("testTimeout %q", ev.Env["testTimeout"])
	}
	v := cases(readJUnit(t, r))["timeout script"]
	for _, want := range []string{"FAIL: ", "waiting forever", "the script did not end within the time left of the test's timeout"} {
		if !strings.Contains(v, want) {
			t.Errorf("the script's case lacks %q: %q", want, v)
		}
	}
}

// The sandbox is shaped as the builder's is under Nix.
func TestSandboxShape(t *testing.T) {
	w := setup(t)
	out := filepath.Join(w.outs, storeName("shape", "shape"))
	script := `
id -u; id -g
echo "HOME=$HOME TMPDIR=$TMPDIR NIX_BUILD_TOP=$NIX_BUILD_TOP PATH=$PATH out=$out XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR-unset}"
mkdir -p "$HOME" 2>/dev/null && echo home-writable || echo home-unwritable
stat -c '%a %u' /build
ls /nix/store | sort | tr '\n' ' '; echo
ls /dev | tr '\n' ' '; echo
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' '; echo
touch /nix/store/` + filepath.Base(w.toplevel) + `/x 2>/dev/null && echo store-writable || echo store-read-only
touch "$out/x" && echo out-writable
cat /extra/file; echo changed 2>/dev/null >/extra/file || echo extra-read-only
`
	extra := filepath.Join(w.outs, "shape-extra")
	if err := os.WriteFile(extra, []byte("an extra file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := sandbox(context.Background(), "--store", w.sysStore, "--out", out, "--host-tools", "--ro", extra+"=/extra/file",
		"--env", "PATH=/usr/bin", "--", "/usr/bin/bash", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	var storeEntries []string
	entries, _ := os.ReadDir(w.sysStore)
	for _, e := range entries {
		storeEntries = append(storeEntries, e.Name())
	}
	storeEntries = append(storeEntries, filepath.Base(out))
	sort.Strings(storeEntries)
	want := strings.Join([]string{
		"1000", "100",
		"HOME=/homeless-shelter TMPDIR=/build NIX_BUILD_TOP=/build PATH=/usr/bin out=/nix/store/" + filepath.Base(out) + " XDG_RUNTIME_DIR=unset",
		"home-unwritable",
		"700 1000",
		strings.Join(storeEntries, " ") + " ",
		"core fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ",
		"lo ",
		"store-read-only",
		"out-writable",
		"an extra file",
		"extra-read-only",
	}, "\n") + "\n"
	if string(b) != want {
		t.Errorf("inside the sandbox:\n%s\nwant:\n%s", b, want)
	}
	// Started as root, the build runs as another user, not root.
	if fi, err := os.Stat(filepath.Join(out, "x")); err != nil {
		t.Error(err)
	} else if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid == 0 || st.Uid != uint32(os.Geteuid()) && os.Geteuid() != 0 {
		t.Errorf("$out/x belongs to uid %v; want a non-root uid (the caller's, or --uid's as root)", fi.Sys())
	}
}

// The interactive form (passthru.interactive, the program Nix would
// build, run here as it is) boots the test's systems and leaves them
// reachable by name: here inside the sandbox (which holds the test
// system's store), a second program reaches the VM with `sonix-run exec`
// and stops it, which ends the driver.
func TestInteractive(t *testing.T) {
	w := setup(t)
	s := w.spec("interactive")
	s.Script = str("true\n") // a test has something to run; the driver does not run it
	ev := evaluate(t, s)
	w.materialize(t, ev)
	program := ""
	for p, kind := range ev.Store {
		if kind == "interactive" {
			program = p + "/bin/" + ev.Interactive.Name
		}
	}
	probe := `
coproc driver { "$1" 2>&1; }
pid=$driver_PID
exec 3<&"${driver[0]}"
while IFS= read -r line <&3; do
	echo "driver: $line"
	case $line in *"are running, on the LAN"*) break ;; esac
done
sonix-run exec machine -- cat /proc/sys/kernel/hostname | sed 's/^/hostname: /'
sonix-run list | cut -c1-20
sonix-run stop machine
while IFS= read -r line <&3; do echo "driver: $line"; done
wait "$pid"; echo "driver status $?"
`
	args := []string{"--store", w.sysStore, "--store", w.toolStore, "--host-tools",
		"--env", "PATH=" + ev.Env["toolPath"] + ":/usr/bin", "--env", "SONIX_VIRTIOFSD=" + ev.Env["sonixVirtiofsd"]}
	if w.kvm {
		args = append(args, "--kvm")
	}
	args = append(args, "--", "/usr/bin/bash", "-c", probe, "probe", program)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := sandbox(ctx, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	for _, want := range []string{
		"driver: booting machine ...",
		"driver:   machine          10.0.0.1     sonix-run shell machine",
		"hostname: sonix-test",
		"machine",
		"driver: every VM has stopped",
		"driver status 0",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the interactive driver's session lacks %q:\n%s", want, b)
		}
	}
}
