package kernelimage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sonix-run/sonix-run/internal/fileid"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// entries lists the cache's entry directories (not index, temporaries).
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ds, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		if d.IsDir() && d.Name() != "index" && !strings.HasPrefix(d.Name(), ".") {
			out = append(out, d.Name())
		}
	}
	return out
}

func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	t2, _ := filepath.Glob(filepath.Join(dir, ".trash-*"))
	return append(m, t2...)
}

func TestCacheMissThenHit(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	img, elf := testBzImage(t, Xz, true)
	path := writeFile(t, dir, "bzImage", img)
	ctx := context.Background()

	e, err := cache.Uncompressed(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if e.Hit || !e.Cached || e.Info.Format != ELF || !e.Info.PVH || e.Info.Release != testRelease || e.Source.Path != path || e.Source.Format != BzImage {
		t.Fatalf("first call: %+v", e)
	}
	if got, _ := os.ReadFile(e.Path); !bytes.Equal(got, elf) {
		t.Fatal("cached vmlinux differs from the original ELF")
	}
	e2, err := cache.Uncompressed(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !e2.Hit || e2.Path != e.Path || e2.Info != e.Info || e2.Source.Release != testRelease || e2.Source.Path != path {
		t.Fatalf("second call: %+v\nfirst: %+v", e2, e)
	}
	// The same content under another name is the same entry.
	other := writeFile(t, dir, "copy", img)
	e3, err := cache.Uncompressed(ctx, other)
	if err != nil || !e3.Hit || e3.Path != e.Path || e3.Source.Path != other {
		t.Fatalf("copy: %+v, %v", e3, err)
	}
	if n := entries(t, cache.Dir()); len(n) != 1 {
		t.Fatalf("entries %v, want one", n)
	}

	elfPath, note, err := cache.BootableELF(ctx, path)
	if err != nil || elfPath != e.Path || !strings.Contains(note, "from the kernel cache") {
		t.Fatalf("BootableELF = %q, %q, %v", elfPath, note, err)
	}
}

func TestCacheUncompressedPassesThrough(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	for name, data := range map[string][]byte{"vmlinux": testELF(true), "Image": makeArm64Image(8192, 1)} {
		path := writeFile(t, dir, name, data)
		e, err := cache.Uncompressed(context.Background(), path)
		if err != nil || e.Path != path || e.Cached || e.Info.Release != testRelease {
			t.Fatalf("%s: %+v, %v", name, e, err)
		}
	}
	if _, err := os.Stat(cache.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the cache was created for images that need no decompressing")
	}
}

func TestCacheArm64(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	arm := makeArm64Image(200<<10, 4)
	for _, c := range []Compression{Gzip, Zstd, Xz} {
		path := writeFile(t, dir, "vmlinuz-"+string(c), makeZboot(compressWith(t, c, arm), string(c), 0xaa64))
		for i := 0; i < 2; i++ {
			e, err := cache.Uncompressed(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if e.Hit != (i == 1) || e.Info.Format != Image || e.Info.Arch != AArch64 || filepath.Base(e.Path) != "Image" {
				t.Fatalf("%s call %d: %+v", c, i, e)
			}
			if got, _ := os.ReadFile(e.Path); !bytes.Equal(got, arm) {
				t.Fatalf("%s: cached Image differs", c)
			}
		}
		elfPath, note, err := cache.BootableELF(context.Background(), path)
		if err != nil || elfPath != "" || !strings.Contains(note, "not an x86 bzImage") {
			t.Fatalf("BootableELF of a zboot image = %q, %q, %v", elfPath, note, err)
		}
	}
}

func TestCacheNoPVH(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	img, _ := testBzImage(t, Gzip, false)
	path := writeFile(t, dir, "bzImage", img)
	for i := 0; i < 2; i++ {
		elfPath, note, err := cache.BootableELF(context.Background(), path)
		if err != nil || elfPath != "" || !strings.Contains(note, "no PVH entry note") {
			t.Fatalf("call %d: BootableELF = %q, %q, %v", i, elfPath, note, err)
		}
		_, err = cache.Uncompressed(context.Background(), path)
		if !errors.Is(err, ErrNoPVH) || !strings.Contains(err.Error(), path) {
			t.Fatalf("call %d: Uncompressed error %v", i, err)
		}
	}
	// The cache remembers the answer, without a 66 MB file nobody boots.
	n := entries(t, cache.Dir())
	if len(n) != 1 {
		t.Fatalf("entries %v", n)
	}
	files, _ := os.ReadDir(filepath.Join(cache.Dir(), n[0]))
	if len(files) != 1 || files[0].Name() != "meta.json" {
		t.Fatalf("the entry holds %v, want only meta.json", files)
	}
}

func TestCacheRemembersBadImages(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	img, _ := testBzImage(t, Xz, true)
	img[4*512+0x100+3000] ^= 0xff
	path := writeFile(t, dir, "bzImage", img)
	for i := 0; i < 2; i++ {
		elfPath, note, err := cache.BootableELF(context.Background(), path)
		if err != nil || elfPath != "" || !strings.Contains(note, path) || !strings.Contains(note, "xz") {
			t.Fatalf("call %d: BootableELF = %q, %q, %v", i, elfPath, note, err)
		}
	}
	if n := entries(t, cache.Dir()); len(n) != 1 {
		t.Fatalf("entries %v, want the remembered failure", n)
	}
}

func TestBootableELFReasons(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	bz, _ := testBzImage(t, Gzip, true)
	lzo := append([]byte(nil), bz...)
	copy(lzo[4*512+0x100:], lzoMagic)
	pvhELF := writeFile(t, dir, "vmlinux", testELF(true))
	cases := []struct {
		name     string
		path     string
		wantPath string
		note     string
	}{
		{"ELF with PVH", pvhELF, pvhELF, "already"},
		{"ELF without PVH", writeFile(t, dir, "vmlinux-nopvh", testELF(false)), "", "without a PVH entry note"},
		{"arm64 Image", writeFile(t, dir, "Image", makeArm64Image(4096, 1)), "", "not an x86 bzImage"},
		{"lzo", writeFile(t, dir, "lzo", lzo), "", "lzo"},
		{"missing", filepath.Join(dir, "nope"), "", "nope"},
		{"not a kernel", writeFile(t, dir, "text", []byte("hello")), "", "expected an x86 bzImage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, note, err := cache.BootableELF(context.Background(), c.path)
			if err != nil || p != c.wantPath || !strings.Contains(note, c.note) {
				t.Fatalf("BootableELF = %q, %q, %v; want %q and a note saying %q", p, note, err, c.wantPath, c.note)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _, err := cache.BootableELF(ctx, writeFile(t, dir, "bz", bz))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if n := entries(t, cache.Dir()); len(n) != 0 {
			t.Fatalf("a cancelled fill left entries %v", n)
		}
		if l := leftovers(t, cache.Dir()); len(l) != 0 {
			t.Fatalf("a cancelled fill left %v", l)
		}
	})
	t.Run("unwritable cache", func(t *testing.T) {
		blocker := writeFile(t, dir, "file", []byte("x"))
		c := NewCache(filepath.Join(blocker, "cache"), 0)
		p, note, err := c.BootableELF(context.Background(), writeFile(t, dir, "bz2", bz))
		if err != nil || p != "" || !strings.Contains(note, "kernel cache") {
			t.Fatalf("BootableELF = %q, %q, %v", p, note, err)
		}
	})
}

// CachedELF finds what BootableELF put in the cache and never fills it.
func TestCachedELF(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	img, elf := testBzImage(t, Gzip, true)
	path := writeFile(t, dir, "bzImage", img)
	ctx := context.Background()
	p, note, err := cache.CachedELF(ctx, path)
	if err != nil || p != "" || !strings.Contains(note, ErrNotCached.Error()) {
		t.Fatalf("CachedELF on a miss = %q, %q, %v", p, note, err)
	}
	if _, err := os.Stat(cache.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a lookup created the cache: %v", err)
	}
	filled, _, err := cache.BootableELF(ctx, path)
	if err != nil || filled == "" {
		t.Fatalf("BootableELF = %q, %v", filled, err)
	}
	p, note, err = cache.CachedELF(ctx, path)
	if err != nil || p != filled || !strings.Contains(note, "from the kernel cache") {
		t.Fatalf("CachedELF on a hit = %q, %q, %v; want %s", p, note, err, filled)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, elf) {
		t.Fatal("the cached vmlinux is not the image's")
	}
	// A damaged entry is a miss, and is not refilled.
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	if p, note, err = cache.CachedELF(ctx, path); p != "" || !strings.Contains(note, ErrNotCached.Error()) {
		t.Fatalf("CachedELF of a damaged entry = %q, %q, %v", p, note, err)
	}
	if n := entries(t, cache.Dir()); len(n) != 0 {
		t.Fatalf("entries %v after a lookup found the damaged one", n)
	}
	// An ELF with the note needs no cache.
	pvh := writeFile(t, dir, "vmlinux", testELF(true))
	if p, _, err = cache.CachedELF(ctx, pvh); p != pvh || err != nil {
		t.Fatalf("CachedELF of a PVH ELF = %q, %v", p, err)
	}
}

// A truncated, overwritten or half-deleted entry is detected and replaced.
func TestCacheRepairsDamage(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	img, elf := testBzImage(t, Zstd, true)
	path := writeFile(t, dir, "bzImage", img)
	ctx := context.Background()
	e, err := cache.Uncompressed(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	entryDir := filepath.Dir(e.Path)
	damages := []struct {
		name string
		do   func() error
	}{
		{"truncated vmlinux", func() error { return os.Truncate(e.Path, int64(len(elf)/2)) }},
		{"empty vmlinux", func() error { return os.Truncate(e.Path, 0) }},
		{"vmlinux overwritten, same size", func() error { return os.WriteFile(e.Path, make([]byte, len(elf)), 0o644) }},
		{"vmlinux deleted", func() error { return os.Remove(e.Path) }},
		{"meta.json truncated", func() error { return os.Truncate(filepath.Join(entryDir, "meta.json"), 10) }},
		{"meta.json of another image", func() error {
			p := filepath.Join(entryDir, "meta.json")
			data, _ := os.ReadFile(p)
			var m meta
			json.Unmarshal(data, &m)
			m.ImageSHA256 = strings.Repeat("0", 64)
			data, _ = json.Marshal(m)
			return os.WriteFile(p, data, 0o644)
		}},
		{"meta.json naming another file", func() error {
			p := filepath.Join(entryDir, "meta.json")
			data, _ := os.ReadFile(p)
			return os.WriteFile(p, bytes.Replace(data, []byte(`"vmlinux"`), []byte(`"../../etc/passwd"`), 1), 0o644)
		}},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			if err := d.do(); err != nil {
				t.Fatal(err)
			}
			e2, err := cache.Uncompressed(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if e2.Hit || e2.Path != e.Path {
				t.Fatalf("damage not detected: %+v", e2)
			}
			if got, _ := os.ReadFile(e2.Path); !bytes.Equal(got, elf) {
				t.Fatal("the replaced vmlinux differs")
			}
			if e3, err := cache.Uncompressed(ctx, path); err != nil || !e3.Hit {
				t.Fatalf("after repair: %+v, %v", e3, err)
			}
		})
	}
	t.Run("cache deleted", func(t *testing.T) {
		if err := os.RemoveAll(cache.Dir()); err != nil {
			t.Fatal(err)
		}
		e2, err := cache.Uncompressed(ctx, path)
		if err != nil || e2.Hit {
			t.Fatalf("after rm -rf: %+v, %v", e2, err)
		}
	})
	if l := leftovers(t, cache.Dir()); len(l) != 0 {
		t.Fatalf("left %v", l)
	}
}

func TestCacheEviction(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var images []string
	var size int64
	for i := 0; i < 5; i++ {
		elf := makeELF(elfSpec{class64: true, machine: 62, pvh: true, pvhDesc: 8, release: testRelease, bodySize: 100 << 10, seed: uint64(100 + i)})
		images = append(images, writeFile(t, dir, fmt.Sprintf("bz%d", i), makeBzImage(kernelPayload(Gzip, compressWith(t, Gzip, elf), len(elf)), testRelease)))
		size = int64(len(elf))
	}
	// Room for three entries (and their meta.json).
	cache := NewCache(filepath.Join(dir, "cache"), 3*size+3*4096)
	paths := make([]string, len(images))
	old := time.Now().Add(-time.Hour)
	for i, img := range images[:3] {
		e, err := cache.Uncompressed(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		paths[i] = e.Path
		// Distinct ages without waiting: the eviction order is mtime.
		at := old.Add(time.Duration(i) * time.Minute)
		os.Chtimes(filepath.Dir(e.Path), at, at)
	}
	// Using image 0 makes it the most recent: image 1 is now the oldest.
	if e, err := cache.Uncompressed(ctx, images[0]); err != nil || !e.Hit {
		t.Fatalf("%+v, %v", e, err)
	}
	e, err := cache.Uncompressed(ctx, images[3])
	if err != nil {
		t.Fatal(err)
	}
	paths[3] = e.Path
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if exists(paths[1]) || !exists(paths[0]) || !exists(paths[2]) || !exists(paths[3]) {
		t.Fatalf("after the 4th fill: 0 %v, 1 %v, 2 %v, 3 %v; want 1 evicted", exists(paths[0]), exists(paths[1]), exists(paths[2]), exists(paths[3]))
	}
	if n := entries(t, cache.Dir()); len(n) != 3 {
		t.Fatalf("entries %v, want 3", n)
	}

	// A bound smaller than one entry keeps the entry just produced.
	tiny := NewCache(filepath.Join(dir, "tiny"), 1)
	for _, img := range images[3:] {
		e, err := tiny.Uncompressed(ctx, img)
		if err != nil || !exists(e.Path) {
			t.Fatalf("%+v, %v", e, err)
		}
		if n := entries(t, tiny.Dir()); len(n) != 1 {
			t.Fatalf("entries %v, want only the newest", n)
		}
	}

	// Leftovers of a killed run go once stale; fresh ones stay.
	stale := filepath.Join(cache.Dir(), ".tmp-deadbeef-1")
	fresh := filepath.Join(cache.Dir(), ".tmp-deadbeef-2")
	for _, d := range []string{stale, fresh} {
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "vmlinux"), []byte("partial"), 0o644)
	}
	os.Chtimes(stale, old, old)
	if _, err := cache.Uncompressed(ctx, images[4]); err != nil {
		t.Fatal(err)
	}
	if exists(stale) || !exists(fresh) {
		t.Fatalf("stale leftover kept %v, fresh leftover kept %v", exists(stale), exists(fresh))
	}
}

func TestCacheIndex(t *testing.T) {
	dir := t.TempDir()
	cache := NewCache(filepath.Join(dir, "cache"), 0)
	img, _ := testBzImage(t, Gzip, true)
	path := writeFile(t, dir, "bzImage", img)
	if _, err := cache.Uncompressed(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	key := func() (string, bool) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		k, fromIndex, err := cache.contentKey(f, st)
		if err != nil {
			t.Fatal(err)
		}
		return k, fromIndex
	}
	k1, fromIndex := key()
	if _, ok := fileid.Of(mustStat(t, path)); ok && !fromIndex {
		t.Fatal("the second look hashed the file again")
	}
	// Same size and modification time, other content: the change time
	// gives it away.
	st := mustStat(t, path)
	changedImg, _ := testBzImage(t, Zstd, true)
	changedImg = changedImg[:min(len(changedImg), len(img))]
	for len(changedImg) < len(img) {
		changedImg = append(changedImg, 0)
	}
	if err := os.WriteFile(path, changedImg, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, st.ModTime(), st.ModTime())
	k2, fromIndex := key()
	if fromIndex || k2 == k1 {
		t.Fatalf("rewritten file: key from index %v, same key %v", fromIndex, k1 == k2)
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Eight goroutines fill an empty cache at once: all get the one entry.
func TestCacheConcurrentGoroutines(t *testing.T) {
	img, elf := testBzImage(t, Xz, true)
	for _, locked := range []bool{false, true} {
		t.Run(fmt.Sprintf("lock=%v", locked), func(t *testing.T) {
			dir := t.TempDir()
			path := writeFile(t, dir, "bzImage", img)
			cache := NewCache(filepath.Join(dir, "cache"), 0)
			cache.noLock = !locked
			var wg sync.WaitGroup
			results := make([]string, 8)
			errs := make([]error, 8)
			start := make(chan struct{})
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if locked {
						var note string
						results[i], note, errs[i] = cache.BootableELF(context.Background(), path)
						if results[i] == "" && !strings.Contains(note, ErrBusy.Error()) {
							errs[i] = errors.New(note)
						}
					} else {
						var e Entry
						e, errs[i] = cache.Uncompressed(context.Background(), path)
						results[i] = e.Path
					}
				}()
			}
			close(start)
			wg.Wait()
			var got string
			for i := range results {
				if errs[i] != nil {
					t.Fatalf("goroutine %d: %v", i, errs[i])
				}
				if results[i] != "" {
					if got != "" && results[i] != got {
						t.Fatalf("paths %q and %q", got, results[i])
					}
					got = results[i]
				}
			}
			if got == "" {
				t.Fatal("no goroutine got the vmlinux")
			}
			if n := entries(t, cache.Dir()); len(n) != 1 {
				t.Fatalf("entries %v, want one", n)
			}
			if data, _ := os.ReadFile(got); !bytes.Equal(data, elf) {
				t.Fatal("the entry differs from the ELF")
			}
			if l := leftovers(t, cache.Dir()); len(l) != 0 {
				t.Fatalf("left %v", l)
			}
		})
	}
}

// Eight processes fill an empty cache at once: each boots either the one
// entry or, while another holds the lock, the bzImage; one entry results.
func TestCacheConcurrentProcesses(t *testing.T) {
	if os.Getenv("KERNELIMAGE_HELPER_CACHE") != "" {
		return // a helper run of this test: see TestHelperFill
	}
	img, elf := testBzImage(t, Xz, true)
	dir := t.TempDir()
	path := writeFile(t, dir, "bzImage", img)
	cacheDir := filepath.Join(dir, "cache")
	for _, mode := range []string{"BootableELF", "Uncompressed"} {
		t.Run(mode, func(t *testing.T) {
			os.RemoveAll(cacheDir)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmds := make([]*exec.Cmd, 8)
			outs := make([]*bytes.Buffer, 8)
			for i := range cmds {
				cmds[i] = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperFill$", "-test.v")
				cmds[i].Env = append(os.Environ(), "KERNELIMAGE_HELPER_CACHE="+cacheDir, "KERNELIMAGE_HELPER_IMAGE="+path, "KERNELIMAGE_HELPER_MODE="+mode)
				outs[i] = new(bytes.Buffer)
				cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
			}
			for i, c := range cmds {
				if err := c.Start(); err != nil {
					for _, started := range cmds[:i] {
						started.Process.Kill()
						started.Wait()
					}
					t.Fatal(err)
				}
			}
			var got string
			busy := 0
			for i, c := range cmds {
				if err := c.Wait(); err != nil {
					t.Errorf("process %d: %v\n%s", i, err, outs[i])
					continue
				}
				_, result, ok := strings.Cut(outs[i].String(), "RESULT ")
				result, _, _ = strings.Cut(result, "\n")
				switch {
				case !ok:
					t.Errorf("process %d printed no result:\n%s", i, outs[i])
				case result == "busy":
					busy++
				case got != "" && result != got:
					t.Errorf("process %d got %q, another %q", i, result, got)
				default:
					got = result
				}
			}
			if got == "" {
				t.Fatal("no process got the vmlinux")
			}
			if mode == "Uncompressed" && busy != 0 {
				t.Errorf("%d processes gave up", busy)
			}
			t.Logf("%s: %d of 8 processes fell back while another extracted", mode, busy)
			if n := entries(t, cacheDir); len(n) != 1 {
				t.Fatalf("entries %v, want one", n)
			}
			if data, _ := os.ReadFile(got); !bytes.Equal(data, elf) {
				t.Fatal("the entry differs from the ELF")
			}
			if l := leftovers(t, cacheDir); len(l) != 0 {
				t.Fatalf("left %v", l)
			}
		})
	}
}

// TestHelperFill is one of TestCacheConcurrentProcesses's processes.
func TestHelperFill(t *testing.T) {
	cacheDir := os.Getenv("KERNELIMAGE_HELPER_CACHE")
	if cacheDir == "" {
		t.Skip("run by TestCacheConcurrentProcesses")
	}
	cache := NewCache(cacheDir, 0)
	image := os.Getenv("KERNELIMAGE_HELPER_IMAGE")
	if os.Getenv("KERNELIMAGE_HELPER_MODE") == "Uncompressed" {
		e, err := cache.Uncompressed(context.Background(), image)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("RESULT %s\n", e.Path)
		return
	}
	p, note, err := cache.BootableELF(context.Background(), image)
	switch {
	case err != nil:
		t.Fatal(err)
	case p != "":
		fmt.Printf("RESULT %s\n", p)
	case strings.Contains(note, ErrBusy.Error()):
		fmt.Printf("RESULT busy\n")
	default:
		t.Fatal(note)
	}
}

func TestRealKernelCache(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses whole distribution kernels; skipped with -short")
	}
	path := realKernel(t, "x86_64")
	cache := NewCache(t.TempDir(), 0)
	ctx := context.Background()
	start := time.Now()
	p, note, err := cache.BootableELF(ctx, path)
	if err != nil || p == "" {
		t.Fatalf("BootableELF = %q, %q, %v", p, note, err)
	}
	t.Logf("miss: %v (%s)", time.Since(start), note)
	start = time.Now()
	p2, note, err := cache.BootableELF(ctx, path)
	if err != nil || p2 != p || !strings.Contains(note, "from the kernel cache") {
		t.Fatalf("BootableELF = %q, %q, %v", p2, note, err)
	}
	t.Logf("hit: %v", time.Since(start))
	info, err := Inspect(p)
	if err != nil || !info.PVH || info.Format != ELF {
		t.Fatalf("the cached vmlinux: %+v, %v", info, err)
	}
}
