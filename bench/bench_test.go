// Package bench measures how fast sonix-run boots and moves data, against
// the hand-written way of booting the same system (virtiofsd and QEMU
// started by a shell script). It boots the project's test system dozens of
// times, so it runs only when asked:
//
//	SONIX_BENCH=1 go test -run TestBench -v -timeout 90m ./bench
//
// bench/README.md says what each row means and which knobs there are.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

// runTimeout bounds every command the benchmark runs: a boot under TCG on
// a loaded 2-core host takes tens of seconds, never minutes.
const runTimeout = 10 * time.Minute

// transferBytes is how much goes through stdout and stdin.
const transferBytes = 20_000_000

// bench is one sitting: the binary, the system it boots, the settings.
type bench struct {
	t        *testing.T
	bin      string // sonix-run
	target   string // the test system's toplevel
	store    string
	accel    string
	cacheDir string // $XDG_CACHE_HOME of every run
	runDir   string // $XDG_RUNTIME_DIR of every run
	work     string
}

func TestBench(t *testing.T) {
	if os.Getenv("SONIX_BENCH") == "" {
		t.Skip("set SONIX_BENCH=1 to run the benchmark (it boots the test system dozens of times; bench/README.md)")
	}
	b := setup(t)
	pairs := envInt(t, "SONIX_BENCH_PAIRS", 5)
	parallelPairs := envInt(t, "SONIX_BENCH_PARALLEL_PAIRS", 3)
	execs := envInt(t, "SONIX_BENCH_EXECS", 20)

	// The hand-written way: what `--dry-run --kernel-format bzimage`
	// prints is virtiofsd and QEMU as a script would start them, booting
	// the bzImage as it is.
	hand := b.script("hand.sh", "--kernel-format", "bzimage")
	hand512 := b.script("hand512.sh", "--kernel-format", "bzimage", "--memory", "512M")
	handRun := func() sample { return b.timed(nil, "sh", hand) }

	b.run(nil, b.bin, "extract-kernel", b.kernel()) // the cache holds the vmlinux
	boot := func(args ...string) func() sample {
		return func() sample {
			return b.timed(nil, b.bin, append(append([]string{"--accel", b.accel, "--store", b.store}, args...), b.target)...)
		}
	}
	var only *regexp.Regexp
	if o := os.Getenv("SONIX_BENCH_ONLY"); o != "" {
		only = regexp.MustCompile(o)
	}
	var rows []row
	// add measures a row unless $SONIX_BENCH_ONLY leaves it out.
	add := func(name string, measure func(name string) row) {
		if only != nil && !only.MatchString(name) {
			return
		}
		r := measure(name)
		rows = append(rows, r)
		t.Logf("%s: median ratio %.2f, CPU %.2f (%s)", r.name, r.ratio, r.cpuRatio, r.detail)
	}

	const handWritten = "hand-written script, bzImage"
	add("boot to poweroff, vmlinux from the kernel cache (PVH)", func(name string) row {
		return compare(name, handWritten, "≤ 0.60", pairs, boot(), handRun)
	})
	add("first run: empty kernel cache, extraction included", func(name string) row {
		return compare(name, handWritten, "≤ 1.1", pairs, func() sample {
			if err := os.RemoveAll(filepath.Join(b.cacheDir, "sonix-run", "kernels")); err != nil {
				t.Fatal(err)
			}
			return boot()()
		}, handRun)
	})
	add("boot to poweroff, --kernel-format bzimage (sonix-run's own cost)", func(name string) row {
		return compare(name, handWritten, "", pairs, boot("--kernel-format", "bzimage"), handRun)
	})
	add("--run true (boot, agent, command, poweroff)", func(name string) row {
		return compare(name, handWritten, "", pairs, boot("--run", "true"), handRun)
	})

	runTrue := boot("--run", "true")
	add(fmt.Sprintf("--run: %d MB out through stdout", transferBytes/1_000_000), func(name string) row {
		return compare(name, "--run true", "", pairs, func() sample {
			return b.timedCheck(nil, countIs(transferBytes), b.bin, "--accel", b.accel, "--store", b.store,
				"--run", fmt.Sprintf("head -c %d /dev/zero", transferBytes), b.target)
		}, runTrue)
	})
	add(fmt.Sprintf("--run: %d MB in through stdin", transferBytes/1_000_000), func(name string) row {
		return compare(name, "--run true", "", pairs, func() sample {
			return b.timedCheck(payload(), outputIs(strconv.Itoa(transferBytes)), b.bin, "--accel", b.accel, "--store", b.store,
				"--run", "wc -c", b.target)
		}, runTrue)
	})
	add("8 VMs at once (--memory 512M each), wall time", func(name string) row {
		return compare(name, "8 hand-written scripts at once", "", parallelPairs, func() sample {
			return b.parallel(8, b.bin, "--accel", b.accel, "--memory", "512M", "--store", b.store, b.target)
		}, func() sample { return b.parallel(8, "sh", hand512) })
	})
	if only == nil || only.MatchString("exec") {
		rows = append(rows, b.execRows(execs)...)
	}
	report := b.report(rows, pairs, parallelPairs)
	t.Log("\n" + report)
	if out := os.Getenv("SONIX_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("$%s=%q: expected a positive number", name, v)
	}
	return n
}

func setup(t *testing.T) *bench {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed")
	}
	accel := os.Getenv("SONIX_BENCH_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	if accel != "tcg" && accel != "kvm" {
		t.Fatalf("$SONIX_BENCH_ACCEL=%q: expected tcg or kvm", accel)
	}
	work := t.TempDir()
	b := &bench{t: t, accel: accel, work: work,
		cacheDir: filepath.Join(work, "cache"), runDir: filepath.Join(work, "runtime")}
	for _, d := range []string{b.cacheDir, b.runDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	b.bin = filepath.Join(work, "sonix-run")
	build := exec.Command("go", "build", "-o", b.bin, "../cmd/sonix-run")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building sonix-run: %v\n%s", err, out)
	}
	in, err := testsystem.FindInputs("x86_64")
	if err != nil {
		t.Fatalf("test system inputs missing (run scripts/install-test-deps): %v", err)
	}
	sys, err := testsystem.Build(filepath.Join(work, "sys"), in, testsystem.Options{Salt: strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		t.Fatal(err)
	}
	b.target, b.store = sys.Toplevel, sys.StoreDir
	return b
}

// kernel is the bzImage the test system boots.
func (b *bench) kernel() string {
	m, _ := filepath.Glob(filepath.Join(b.store, "*-linux-*", "bzImage"))
	if len(m) != 1 {
		b.t.Fatalf("expected one bzImage in %s, found %q", b.store, m)
	}
	return m[0]
}

func (b *bench) env() []string { return b.envWith(b.runDir) }

func (b *bench) envWith(runtimeDir string) []string {
	return append(os.Environ(), "XDG_CACHE_HOME="+b.cacheDir, "XDG_RUNTIME_DIR="+runtimeDir)
}

// script writes what --dry-run prints for the test system (with args) to
// a file and returns its path.
func (b *bench) script(name string, args ...string) string {
	argv := append(append([]string{"--dry-run", "--accel", b.accel, "--store", b.store}, args...), b.target)
	out := b.run(nil, b.bin, argv...)
	p := filepath.Join(b.work, name)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// run runs a command to its end (exit 0 or the benchmark fails) and
// returns its stdout.
func (b *bench) run(stdin []byte, name string, args ...string) []byte {
	out, _ := b.runTimed(stdin, name, args...)
	return out
}

func (b *bench) runTimed(stdin []byte, name string, args ...string) ([]byte, sample) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = b.env()
	cmd.Dir = b.work
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := sample{wall: time.Since(start)}
	if err != nil {
		b.t.Fatalf("%s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, tail(stderr.String()))
	}
	took.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return stdout.Bytes(), took
}

func (b *bench) timed(stdin []byte, name string, args ...string) sample {
	_, took := b.runTimed(stdin, name, args...)
	return took
}

// timedCheck is timed, with check run on the command's stdout.
func (b *bench) timedCheck(stdin []byte, check func([]byte) error, name string, args ...string) sample {
	out, took := b.runTimed(stdin, name, args...)
	if err := check(out); err != nil {
		b.t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return took
}

// parallel starts n copies of a command at once and returns the wall time
// until the last has ended; each must exit 0. Each copy has a runtime
// directory of its own: unnamed runs of one system started in the same
// instant race for the same default VM name (a launcher bug, reported).
func (b *bench) parallel(n int, name string, args ...string) sample {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var cpu time.Duration
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = filepath.Join(b.work, fmt.Sprintf("runtime-%d", i))
		if err := os.MkdirAll(dirs[i], 0o700); err != nil {
			b.t.Fatal(err)
		}
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := b.runQuiet(dirs[i], name, args...)
			mu.Lock()
			cpu += c
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := sample{wall: time.Since(start), cpu: cpu}
	if b.t.Failed() {
		b.t.FailNow()
	}
	return took
}

// runQuiet is run for goroutines: it reports a failure with Errorf (Fatal
// must not be called off the test's goroutine) and the caller checks.
func (b *bench) runQuiet(runtimeDir, name string, args ...string) (cpu time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = b.envWith(runtimeDir), b.work
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		b.t.Errorf("%s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, tail(stderr.String()))
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

func payload() []byte {
	p := make([]byte, transferBytes)
	x := uint32(2463534242)
	for i := range p { // xorshift: bytes no link could compress
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}

func countIs(n int) func([]byte) error {
	return func(out []byte) error {
		if len(out) != n {
			return fmt.Errorf("stdout has %d bytes, want %d", len(out), n)
		}
		return nil
	}
}

func outputIs(want string) func([]byte) error {
	return func(out []byte) error {
		if got := strings.TrimSpace(string(out)); got != want {
			return fmt.Errorf("stdout %q, want %q", got, want)
		}
		return nil
	}
}

// sample is one timed run: its wall time, and the CPU time (user and
// system) of the process and the descendants it waited for, which a host
// busy with other work inflates less.
type sample struct{ wall, cpu time.Duration }

func (s sample) add(o sample) sample { return sample{max(s.wall, o.wall), s.cpu + o.cpu} }

// row is one line of the report.
type row struct {
	name, baseline, target string
	ratio                  float64       // median of the pairs' wall-time ratios; 0 for absolute rows
	cpuRatio               float64       // the same for CPU time
	a, b                   time.Duration // median wall times
	detail                 string
}

// compare runs n alternated pairs (A then B, then B then A, ...) so that a
// host that speeds up or slows down during the sitting weighs on both, and
// takes the median of the per-pair ratios A/B.
func compare(name, baseline, target string, n int, a, b func() sample) row {
	var ratios, cpuRatios []float64
	var as, bs []time.Duration
	for i := 0; i < n; i++ {
		var sa, sb sample
		if i%2 == 0 {
			sa, sb = a(), b()
		} else {
			sb, sa = b(), a()
		}
		as, bs = append(as, sa.wall), append(bs, sb.wall)
		ratios = append(ratios, sa.wall.Seconds()/sb.wall.Seconds())
		cpuRatios = append(cpuRatios, sa.cpu.Seconds()/sb.cpu.Seconds())
	}
	r := row{name: name, baseline: baseline, target: target,
		ratio: median(ratios), cpuRatio: median(cpuRatios), a: medianDuration(as), b: medianDuration(bs)}
	sort.Float64s(ratios)
	sort.Float64s(cpuRatios)
	r.detail = fmt.Sprintf("wall-time ratios %s; CPU-time ratios %s", formatRatios(ratios), formatRatios(cpuRatios))
	return r
}

func formatRatios(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(s, " ")
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDuration(d []time.Duration) time.Duration {
	f := make([]float64, len(d))
	for i, v := range d {
		f[i] = float64(v)
	}
	return time.Duration(median(f))
}

// execRows boot one named VM and time, on it: an exec round trip (`exec
// NAME -- true`, n times) and 20 MB out and in through exec.
func (b *bench) execRows(n int) []row {
	name := fmt.Sprintf("bench-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	vm := exec.CommandContext(ctx, b.bin, "--accel", b.accel, "--store", b.store, "--name", name, b.target)
	vm.Env, vm.Dir = b.env(), b.work
	console, err := vm.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	var stderr bytes.Buffer
	vm.Stderr = &stderr
	if err := vm.Start(); err != nil {
		b.t.Fatal(err)
	}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() { // ends at EOF: when the VM's sonix-run has exited
		defer close(scanned)
		sc := bufio.NewScanner(console)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), "sonix-test: starting the agent") {
				said = true
				close(ready)
			}
		}
		io.Copy(io.Discard, console)
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		exited <- vm.Wait()
	}()
	defer func() {
		stop := exec.Command(b.bin, "stop", "--wait", "1m", name)
		stop.Env = b.env()
		stop.Run()
		select {
		case <-exited:
		case <-time.After(2 * time.Minute):
			vm.Process.Kill()
			<-exited
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		exited <- err // for the deferred stop
		b.t.Fatalf("the VM ended before its agent started (%v):\n%s", err, tail(stderr.String()))
	case <-ctx.Done():
		b.t.Fatal("the VM's agent did not start in time")
	}

	var trips []time.Duration
	for i := 0; i < n; i++ {
		trips = append(trips, b.timed(nil, b.bin, "exec", name, "--", "true").wall)
	}
	var outs, ins []time.Duration
	in := payload()
	for i := 0; i < 5; i++ {
		outs = append(outs, b.timedCheck(nil, countIs(transferBytes), b.bin, "exec", name, "--", "head", "-c", strconv.Itoa(transferBytes), "/dev/zero").wall)
		ins = append(ins, b.timedCheck(in, outputIs(strconv.Itoa(transferBytes)), b.bin, "exec", name, "--", "wc", "-c").wall)
	}
	trip := medianDuration(trips)
	rate := func(d time.Duration) string {
		return fmt.Sprintf("%.0f MB/s", float64(transferBytes)/1e6/(d-trip).Seconds())
	}
	return []row{
		{name: "exec round trip on a running VM (`exec NAME -- true`)", a: trip,
			detail: fmt.Sprintf("%d round trips, median", n)},
		{name: fmt.Sprintf("exec: %d MB out through stdout", transferBytes/1_000_000), a: medianDuration(outs),
			detail: "5 runs, median; " + rate(medianDuration(outs)) + " beyond a round trip"},
		{name: fmt.Sprintf("exec: %d MB in through stdin", transferBytes/1_000_000), a: medianDuration(ins),
			detail: "5 runs, median; " + rate(medianDuration(ins)) + " beyond a round trip"},
	}
}

// report is the results as a Markdown table, with the machine they were
// taken on.
func (b *bench) report(rows []row, pairs, parallelPairs int) string {
	var w strings.Builder
	fmt.Fprintf(&w, "sonix-run benchmark, %s, accel %s, %d alternated pairs (%d for 8 VMs at once)\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), b.accel, pairs, parallelPairs)
	fmt.Fprintf(&w, "machine: %s\n\n", machine())
	fmt.Fprintf(&w, "| measurement | against | median ratio, wall | (CPU) | sonix-run, median | against, median | target |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		ratio, cpu, against := "—", "—", "—"
		if r.ratio != 0 {
			ratio, cpu, against = fmt.Sprintf("**%.2f**", r.ratio), fmt.Sprintf("%.2f", r.cpuRatio), fmt.Sprintf("%.2f s", r.b.Seconds())
		}
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %.2f s | %s | %s |\n", r.name, orDash(r.baseline), ratio, cpu, r.a.Seconds(), against, orDash(r.target))
	}
	fmt.Fprintf(&w, "\n")
	for _, r := range rows {
		fmt.Fprintf(&w, "- %s: %s\n", r.name, r.detail)
	}
	return w.String()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// machine describes the host: CPU, cores, memory, kernel, QEMU, load.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0]); len(f) >= 2 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf(", %d GiB", kb>>20)
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	qemu := "QEMU ?"
	if out, err := exec.Command("qemu-system-x86_64", "--version").Output(); err == nil {
		qemu = strings.SplitN(string(out), "\n", 2)[0]
	}
	loadavg := strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " ")
	return fmt.Sprintf("%s, %d cores%s, Linux %s, %s, load average at the end %s",
		cpu, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), qemu, loadavg)
}
