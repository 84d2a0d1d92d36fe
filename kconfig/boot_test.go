package kconfig_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/examples/testsystem"
	"github.com/sonix-run/sonix-run/kconfig"
)

// builtKernel is a scripts/build-test-kernel output directory, named by
// $SONIX_TEST_KERNEL (CI: SONIX_TEST_KERNEL=$(scripts/build-test-kernel | tail -n 1)).
type builtKernel struct {
	dir, release string
}

func (k builtKernel) bzImage() string { return filepath.Join(k.dir, "bzImage") }
func (k builtKernel) vmlinux() string { return filepath.Join(k.dir, "vmlinux") }
func (k builtKernel) modules() string { return filepath.Join(k.dir, "lib", "modules") }

func findBuiltKernel(t *testing.T) builtKernel {
	t.Helper()
	dir := os.Getenv("SONIX_TEST_KERNEL")
	if dir == "" {
		t.Skip("no kernel built with the fragment: set SONIX_TEST_KERNEL to the directory scripts/build-test-kernel prints")
	}
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		t.Fatalf("$SONIX_TEST_KERNEL: %v", err)
	}
	return builtKernel{dir: dir, release: strings.TrimSpace(string(rel))}
}

// The preflight is quiet for the kernel built with the fragment, from its
// embedded config and from its modules tree.
func TestPreflightBuiltKernel(t *testing.T) {
	k := findBuiltKernel(t)
	img, err := os.ReadFile(k.vmlinux())
	if err != nil {
		t.Fatal(err)
	}
	fromImage, err := kconfig.FromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	fromTree, err := kconfig.FromModulesTree(filepath.Join(k.modules(), k.release))
	if err != nil {
		t.Fatal(err)
	}
	for _, kern := range []*kconfig.Kernel{fromImage, fromTree} {
		r, err := kconfig.Check("x86_64", kern)
		if err != nil {
			t.Fatal(err)
		}
		if s := r.String(); s != "" || r.Fatal() {
			t.Errorf("the kernel built with the fragment got a report from %s:\n%s", kern.Source, s)
		}
	}
	// The embedded config is the build's .config.
	cfg, err := kconfig.FromConfigFile(filepath.Join(k.dir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range cfg.Config {
		if fromImage.Config[name] != v {
			t.Errorf("CONFIG_%s: embedded %q, .config %q", name, fromImage.Config[name], v)
		}
	}
}

// sonixRun builds the sonix-run binary into a temporary directory.
func sonixRun(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed")
	}
	bin := filepath.Join(t.TempDir(), "sonix-run")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/sonix-run").CombinedOutput()
	if err != nil {
		t.Fatalf("building sonix-run: %v\n%s", err, out)
	}
	return bin
}

// boot runs sonix-run with args under TCG and returns its output.
func boot(t *testing.T, bin string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	console := filepath.Join(t.TempDir(), "console.log")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--accel", "tcg", "--console-log", console}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err := cmd.Run()
	t.Logf("sonix-run %s: %v in %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Millisecond), o.String(), e.String())
	if err != nil {
		log, _ := os.ReadFile(console)
		t.Fatalf("sonix-run failed: %v; the console:\n%s", err, log)
	}
	return o.String(), e.String()
}

// The test system built for the kernel boots (everything its stage 1 wants
// is built in, so it loads no module) and runs a command through the agent.
func TestBootBuiltKernel(t *testing.T) {
	k := findBuiltKernel(t)
	bin := sonixRun(t)
	in, err := testsystem.FindInputs("x86_64")
	if err != nil {
		t.Fatal(err)
	}
	in.Kernel, in.KernelVersion, in.ModulesDir = k.bzImage(), k.release, k.modules()
	sys, err := testsystem.Build(t.TempDir(), in, testsystem.Options{Salt: strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		t.Fatal(err)
	}
	stdout, _ := boot(t, bin, "--store", sys.StoreDir, "--run", "uname -r; grep -c virtiofs /proc/filesystems", filepath.Join(sys.Dir, "result"))
	if want := k.release + "\n1\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
}

// The imageless case of the issue: a system built for Debian's kernel (its
// initrd holds Debian's modules) booted with --kernel and no modules tree.
// Stage 1 must rely on the built-in drivers when the kernel is not the one
// its modules are for; the uncompressed vmlinux boots too (PVH entry).
func TestBootDebianSystemWithBuiltKernel(t *testing.T) {
	k := findBuiltKernel(t)
	bin := sonixRun(t)
	in, err := testsystem.FindInputs("x86_64")
	if err != nil {
		t.Fatal(err)
	}
	sys, err := testsystem.Build(t.TempDir(), in, testsystem.Options{Salt: strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		t.Fatal(err)
	}
	for _, image := range []string{k.bzImage(), k.vmlinux()} {
		t.Run(filepath.Base(image), func(t *testing.T) {
			stdout, _ := boot(t, bin, "--store", sys.StoreDir, "--kernel", image, "--run", "uname -r", filepath.Join(sys.Dir, "result"))
			if want := k.release + "\n"; stdout != want {
				t.Errorf("stdout %q, want %q", stdout, want)
			}
		})
	}
}
