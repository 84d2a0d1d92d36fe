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

// transferCmd and receiveCmd move transferBytes through the command's
// stdout and stdin with dd and 1 MB blocks (receiveCmd into a file of the
// guest's tmpfs, whose size it prints). busybox's head -c and wc -c
// cannot measure the agent: under TCG head -c alone produces at most
// about 20 MB/s, and through any pipe (into a program that only copies
// it on) about 7 MB/s, as it writes 4 KiB at a time and every write
// wakes its reader on another virtual CPU.
var (
	transferCmd = fmt.Sprintf("dd if=/dev/zero bs=1000000 count=%d 2>/dev/null", transferBytes/1_000_000)
	receiveCmd  = "f=/tmp/sonix-bench.$$; dd of=$f bs=1M 2>/dev/null && stat -c %s $f && rm $f"
)

// system is a sonix-run binary and the test system built from the same
// checkout (its guest agent included).
type system struct {
	label  string
	bin    string // sonix-run
	target string // the test system's toplevel
	store  string
}

// bench is one sitting: this checkout's system, the base checkout's when
// $SONIX_BENCH_BASE names one, the settings.
type bench struct {
	t        *testing.T
	*system  // this checkout's
	base     *system
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
	boot := b.system.boot(b)

	const handWritten = "hand-written script, bzImage"
	add("boot to poweroff, vmlinux from the kernel cache (PVH)", func(name string) row {
		return compare(name, handWritten, "≤ 0.50", pairs, boot(), handRun)
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
		return compare(name, handWritten, "≤ 0.50", pairs, boot("--run", "true"), handRun)
	})
	mb := transferBytes / 1_000_000
	add(fmt.Sprintf("--run: %d MB out through stdout", mb), func(name string) row {
		return transfer(name, "--run true", pairs, b.system.runOut(b), boot("--run", "true"))
	})
	add(fmt.Sprintf("--run: %d MB in through stdin", mb), func(name string) row {
		return transfer(name, "--run true", pairs, b.system.runIn(b), boot("--run", "true"))
	})
	add("8 VMs at once (--memory 512M each), wall time", func(name string) row {
		return compare(name, "8 hand-written scripts at once", "", parallelPairs, func() sample {
			return b.parallel(8, b.bin, "--accel", b.accel, "--memory", "512M", "--store", b.store, b.target)
		}, func() sample { return b.parallel(8, "sh", hand512) })
	})
	if only == nil || only.MatchString("exec") {
		vm := b.startVM(b.system)
		rows = append(rows, b.execRows(vm, execs, pairs)...)
		vm.stop()
	}
	if bs := b.base; bs != nil {
		vs := fmt.Sprintf("base: %s", bs.label)
		add("--run true, against the base", func(name string) row {
			return compare(name, vs, "", pairs, boot("--run", "true"), bs.boot(b)("--run", "true"))
		})
		add(fmt.Sprintf("--run: %d MB out through stdout, against the base", mb), func(name string) row {
			return compare(name, vs, "", pairs, b.system.runOut(b), bs.runOut(b))
		})
		add(fmt.Sprintf("--run: %d MB in through stdin, against the base", mb), func(name string) row {
			return compare(name, vs, "", pairs, b.system.runIn(b), bs.runIn(b))
		})
		if only == nil || only.MatchString("exec") {
			this, base := b.startVM(b.system), b.startVM(bs)
			rows = append(rows, b.execAgainst(this, base, execs, pairs)...)
			this.stop()
			base.stop()
		}
	}
	report := b.report(rows, pairs, parallelPairs)
	t.Log("\n" + report)
	if out := os.Getenv("SONIX_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// boot returns, for arguments, a run of the system's sonix-run that boots
// its test system with them.
func (s *system) boot(b *bench) func(args ...string) func() sample {
	return func(args ...string) func() sample {
		return func() sample {
			return b.timed(nil, s.bin, append(append([]string{"--accel", b.accel, "--store", s.store}, args...), s.target)...)
		}
	}
}

// runOut is a --run that writes transferBytes to stdout, checked.
func (s *system) runOut(b *bench) func() sample {
	return func() sample {
		return b.timedCheck(nil, countIs(transferBytes), s.bin, "--accel", b.accel, "--store", s.store, "--run", transferCmd, s.target)
	}
}

// runIn is a --run that reads transferBytes of stdin, checked.
func (s *system) runIn(b *bench) func() sample {
	in := payload()
	return func() sample {
		return b.timedCheck(in, bytesCopied(transferBytes), s.bin, "--accel", b.accel, "--store", s.store, "--run", receiveCmd, s.target)
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
	salt := strconv.FormatInt(time.Now().UnixNano(), 36)
	this := &system{label: "this checkout", bin: filepath.Join(work, "sonix-run")}
	build := exec.Command("go", "build", "-o", this.bin, "../cmd/sonix-run")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building sonix-run: %v\n%s", err, out)
	}
	in, err := testsystem.FindInputs("x86_64")
	if err != nil {
		t.Fatalf("test system inputs missing (run scripts/install-test-deps): %v", err)
	}
	sys, err := testsystem.Build(filepath.Join(work, "sys"), in, testsystem.Options{Salt: salt})
	if err != nil {
		t.Fatal(err)
	}
	this.target, this.store = sys.Toplevel, sys.StoreDir
	b.system = this
	if dir := os.Getenv("SONIX_BENCH_BASE"); dir != "" {
		b.base = buildBase(t, dir, work, salt)
	}
	return b
}

// buildBase builds sonix-run and the test system (with its agent) of
// another checkout, to compare with this one.
func buildBase(t *testing.T, dir, work, salt string) *system {
	base := &system{label: dir, bin: filepath.Join(work, "base-sonix-run")}
	build := exec.Command("go", "build", "-o", base.bin, "./cmd/sonix-run")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("$SONIX_BENCH_BASE: building its sonix-run: %v\n%s", err, out)
	}
	mk := exec.Command("go", "run", "./examples/testsystem/mktestsystem", "-o", filepath.Join(work, "base-sys"), "--salt", salt+"-base")
	mk.Dir = dir
	out, err := mk.Output()
	if err != nil {
		t.Fatalf("$SONIX_BENCH_BASE: building its test system: %v", err)
	}
	// "sonix-run --store STORE --modules DIR TOPLEVEL"
	f := strings.Fields(string(out))
	if len(f) < 4 || f[1] != "--store" {
		t.Fatalf("$SONIX_BENCH_BASE: mktestsystem printed %q", out)
	}
	base.store, base.target = f[2], f[len(f)-1]
	return base
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
	m := &meter{}
	if stdin != nil {
		m.in = stdin
		cmd.Stdin = m
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = m, &stderr
	start := time.Now()
	err := cmd.Run()
	took := sample{wall: time.Since(start), rate: m.rate(len(stdin))}
	if err != nil {
		b.t.Fatalf("%s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, tail(stderr.String()))
	}
	took.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return m.out.Bytes(), took
}

// meter is a command's stdin and stdout that note when data moves, so
// that a transfer's rate can be told apart from the boot around it.
type meter struct {
	mu         sync.Mutex
	in         []byte
	read       int
	inFlowing  time.Time // the first megabyte of stdin has been taken
	out        bytes.Buffer
	first, end time.Time // stdout's first and last write
}

// flowing is where stdin is surely being taken by the guest rather than
// buffered on its way (a pipe of the host takes 64 KiB).
const flowing = 1 << 20

func (m *meter) Read(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.read >= len(m.in) {
		return 0, io.EOF
	}
	n := copy(p, m.in[m.read:])
	if m.read < flowing && m.read+n >= flowing {
		m.inFlowing = time.Now()
	}
	m.read += n
	return n, nil
}

func (m *meter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.first.IsZero() {
		m.first = now
	}
	m.end = now
	return m.out.Write(p)
}

// rate is the transfer's MB/s: for stdout, its bytes over the time
// between the first and last write; for stdin (of inBytes), the bytes
// after the first megabyte over the time until the command's answer
// (printed once it has everything). 0 when there was no transfer.
func (m *meter) rate(inBytes int) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case inBytes > flowing && !m.inFlowing.IsZero() && m.first.After(m.inFlowing):
		return float64(inBytes-flowing) / 1e6 / m.first.Sub(m.inFlowing).Seconds()
	case inBytes == 0 && m.out.Len() > flowing && m.end.After(m.first):
		return float64(m.out.Len()) / 1e6 / m.end.Sub(m.first).Seconds()
	}
	return 0
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

// bytesCopied checks receiveCmd's output: the size of what it received.
func bytesCopied(n int) func([]byte) error {
	return func(out []byte) error {
		if got := strings.TrimSpace(string(out)); got != strconv.Itoa(n) {
			return fmt.Errorf("the guest received %q bytes, want %d", got, n)
		}
		return nil
	}
}

// sample is one timed run: its wall time, and the CPU time (user and
// system) of the process and the descendants it waited for, which a host
// busy with other work inflates less.
type sample struct {
	wall, cpu time.Duration
	rate      float64 // MB/s of a transfer, measured while it flowed; 0 for others
}

func (s sample) add(o sample) sample { return sample{wall: max(s.wall, o.wall), cpu: s.cpu + o.cpu} }

// row is one line of the report.
type row struct {
	name, baseline, target string
	ratio                  float64       // median of the pairs' wall-time ratios; 0 for absolute rows
	cpuRatio               float64       // the same for CPU time
	a, b                   time.Duration // median wall times
	rate, rateB            float64       // transfer rows: median MB/s while the data flowed (of A, of B)
	rateText               string        // the MB/s column, when set
	detail                 string
	as, bs                 []sample // the pairs
}

// compare runs n alternated pairs (A then B, then B then A, ...) so that a
// host that speeds up or slows down during the sitting weighs on both, and
// takes the median of the per-pair ratios A/B.
func compare(name, baseline, target string, n int, a, b func() sample) (r row) {
	var ratios, cpuRatios []float64
	var as, bs []time.Duration
	var sa, sb []sample
	for i := 0; i < n; i++ {
		var pa, pb sample
		if i%2 == 0 {
			pa, pb = a(), b()
		} else {
			pb, pa = b(), a()
		}
		sa, sb = append(sa, pa), append(sb, pb)
		as, bs = append(as, pa.wall), append(bs, pb.wall)
		ratios = append(ratios, pa.wall.Seconds()/pb.wall.Seconds())
		cpuRatios = append(cpuRatios, pa.cpu.Seconds()/pb.cpu.Seconds())
	}
	r = row{name: name, baseline: baseline, target: target,
		ratio: median(ratios), cpuRatio: median(cpuRatios), a: medianDuration(as), b: medianDuration(bs)}
	r.as, r.bs = sa, sb
	var ra, rb []float64
	for i := range sa {
		if sa[i].rate != 0 && sb[i].rate != 0 {
			ra, rb = append(ra, sa[i].rate), append(rb, sb[i].rate)
		}
	}
	if len(ra) > 0 {
		r.rate, r.rateB = median(ra), median(rb)
		defer func() { r.detail += fmt.Sprintf("; MB/s while the data flowed: %.0f against %.0f", r.rate, r.rateB) }()
	}
	sort.Float64s(ratios)
	sort.Float64s(cpuRatios)
	r.detail = fmt.Sprintf("wall-time ratios %s; CPU-time ratios %s", formatRatios(ratios), formatRatios(cpuRatios))
	return r
}

// transfer is compare for a row that moves transferBytes (A) against the
// same without the data (B). Its rate is the median of A's rates, measured
// while the data flowed (meter), which the noise of a boot around it does
// not reach.
func transfer(name, baseline string, n int, a, b func() sample) row {
	r := compare(name, baseline, "≥ 25 MB/s", n, a, b)
	var rates []float64
	for _, s := range r.as {
		rates = append(rates, s.rate)
	}
	r.rate = median(rates)
	sort.Float64s(rates)
	r.detail += "; MB/s while the data flowed " + formatRatios(rates)
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

// namedVM is a VM of one system started with --name, for exec.
type namedVM struct {
	b       *bench
	sys     *system
	name    string
	exited  chan error
	kill    func()
	stopped bool
}

// startVM boots a system's VM with --name and waits for its agent to start.
func (b *bench) startVM(sys *system) *namedVM {
	name := fmt.Sprintf("bench-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	vm := exec.CommandContext(ctx, sys.bin, "--accel", b.accel, "--store", sys.store, "--name", name, sys.target)
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
	v := &namedVM{b: b, sys: sys, name: name, exited: make(chan error, 1)}
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		v.exited <- vm.Wait()
	}()
	v.kill = func() {
		cancel()
	}
	b.t.Cleanup(v.stop) // a failure on the way must not leave it running
	select {
	case <-ready:
	case err := <-v.exited:
		v.exited <- err // for stop
		cancel()
		b.t.Fatalf("the VM ended before its agent started (%v):\n%s", err, tail(stderr.String()))
	case <-ctx.Done():
		b.t.Fatal("the VM's agent did not start in time")
	}
	// The agent is up once it answers.
	b.run(nil, sys.bin, "exec", name, "--", "true")
	return v
}

func (v *namedVM) stop() {
	if v.stopped {
		return
	}
	v.stopped = true
	stop := exec.Command(v.sys.bin, "stop", "--wait", "1m", v.name)
	stop.Env = v.b.env()
	stop.Run()
	select {
	case <-v.exited:
	case <-time.After(2 * time.Minute):
		v.kill()
		<-v.exited
	}
}

func (v *namedVM) trip() sample {
	return v.b.timed(nil, v.sys.bin, "exec", v.name, "--", "true")
}

func (v *namedVM) out() sample {
	return v.b.timedCheck(nil, countIs(transferBytes), v.sys.bin, "exec", v.name, "--", "sh", "-c", transferCmd)
}

func (v *namedVM) in() func() sample {
	in := payload()
	return func() sample {
		return v.b.timedCheck(in, bytesCopied(transferBytes), v.sys.bin, "exec", v.name, "--", "sh", "-c", receiveCmd)
	}
}

// execRows time, on a running VM: an exec round trip (`exec NAME --
// true`, n times), and transferBytes out and in through exec, each in
// pairs alternated with a round trip, whose difference gives the rate.
func (b *bench) execRows(vm *namedVM, n, pairs int) []row {
	var trips []time.Duration
	for i := 0; i < n; i++ {
		trips = append(trips, vm.trip().wall)
	}
	mb := transferBytes / 1_000_000
	sort.Slice(trips, func(i, j int) bool { return trips[i] < trips[j] })
	return []row{
		{name: "exec round trip on a running VM (`exec NAME -- true`)", a: medianDuration(trips), target: "≤ 0.05 s",
			detail: fmt.Sprintf("%d round trips, median; fastest %.3f s, slowest %.3f s", n, trips[0].Seconds(), trips[len(trips)-1].Seconds())},
		transfer(fmt.Sprintf("exec: %d MB out through stdout", mb), "exec NAME -- true", pairs, vm.out, vm.trip),
		transfer(fmt.Sprintf("exec: %d MB in through stdin", mb), "exec NAME -- true", pairs, vm.in(), vm.trip),
		b.tools(vm, pairs),
	}
}

// tools times what busybox's head -c and wc -c make of exec's data path
// (they, not the agent, set the pace under TCG): the rates while the data
// flowed, out then in, median of n each.
func (b *bench) tools(vm *namedVM, n int) row {
	in := payload()
	var outs, ins []float64
	var walls []time.Duration
	for i := 0; i < n; i++ {
		o := b.timedCheck(nil, countIs(transferBytes), vm.sys.bin, "exec", vm.name, "--", "head", "-c", strconv.Itoa(transferBytes), "/dev/zero")
		w := b.timedCheck(in, bytesCopied(transferBytes), vm.sys.bin, "exec", vm.name, "--", "wc", "-c")
		outs, ins, walls = append(outs, o.rate), append(ins, w.rate), append(walls, o.wall)
	}
	return row{name: fmt.Sprintf("exec: %d MB out / in with busybox head -c / wc -c", transferBytes/1_000_000), a: medianDuration(walls),
		rateText: fmt.Sprintf("%.0f / %.0f", median(outs), median(ins)),
		detail:   fmt.Sprintf("%d runs each; MB/s while the data flowed, out %s, in %s", n, formatRatios(sorted(outs)), formatRatios(sorted(ins)))}
}

func sorted(v []float64) []float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s
}

// execAgainst compares exec on this checkout's VM with exec on the
// base's, alternated.
func (b *bench) execAgainst(this, base *namedVM, n, pairs int) []row {
	vs := fmt.Sprintf("base: %s", base.sys.label)
	mb := transferBytes / 1_000_000
	return []row{
		compare("exec round trip, against the base", vs, "", n, this.trip, base.trip),
		compare(fmt.Sprintf("exec: %d MB out through stdout, against the base", mb), vs, "", pairs, this.out, base.out),
		compare(fmt.Sprintf("exec: %d MB in through stdin, against the base", mb), vs, "", pairs, this.in(), base.in()),
	}
}

// report is the results as a Markdown table, with the machine they were
// taken on.
func (b *bench) report(rows []row, pairs, parallelPairs int) string {
	var w strings.Builder
	fmt.Fprintf(&w, "sonix-run benchmark, %s, accel %s, %d alternated pairs (%d for 8 VMs at once)\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), b.accel, pairs, parallelPairs)
	fmt.Fprintf(&w, "machine: %s\n", machine())
	if b.base != nil {
		fmt.Fprintf(&w, "base: %s\n", b.base.label)
	}
	fmt.Fprintf(&w, "\n| measurement | against | median ratio, wall | (CPU) | sonix-run, median | against, median | MB/s | target |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		ratio, cpu, against, rate := "—", "—", "—", "—"
		if r.ratio != 0 {
			ratio, cpu, against = fmt.Sprintf("**%.2f**", r.ratio), fmt.Sprintf("%.2f", r.cpuRatio), fmt.Sprintf("%.2f s", r.b.Seconds())
		}
		switch {
		case r.rateText != "":
			rate = r.rateText
		case r.rateB != 0:
			rate = fmt.Sprintf("**%.0f** (against %.0f)", r.rate, r.rateB)
		case r.rate != 0:
			rate = fmt.Sprintf("**%.0f**", r.rate)
		}
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %.2f s | %s | %s | %s |\n", r.name, orDash(r.baseline), ratio, cpu, r.a.Seconds(), against, rate, orDash(r.target))
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
