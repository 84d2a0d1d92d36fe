package virtiofs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// countingDaemon is a stand-in virtiofsd that prints the help in helpFile
// and counts its runs in a file.
type countingDaemon struct {
	path, counter, help string
}

func newCountingDaemon(t *testing.T, help string) *countingDaemon {
	t.Helper()
	dir := t.TempDir()
	c := &countingDaemon{path: filepath.Join(dir, "virtiofsd"), counter: filepath.Join(dir, "runs"), help: filepath.Join(dir, "help")}
	c.write(t, help, "")
	return c
}

// write (re)writes the binary; extra changes its size.
func (c *countingDaemon) write(t *testing.T, help, extra string) {
	t.Helper()
	if err := os.WriteFile(c.help, []byte(help), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho run >> '" + c.counter + "'\ncat '" + c.help + "'\n" + extra
	// Replace, as a package manager does: a new inode.
	tmp := c.path + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		t.Fatal(err)
	}
}

func (c *countingDaemon) runs() int {
	b, _ := os.ReadFile(c.counter)
	return strings.Count(string(b), "run\n")
}

func TestFlavourCache(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the cache is kept on Linux only, where virtiofsd runs")
	}
	rustHelp := readHelp(t, "help-rust-1.13.2.txt")
	legacyHelp := readHelp(t, "help-legacy-7.2.txt")
	fake := newCountingDaemon(t, rustHelp)
	t.Setenv(EnvVar, fake.path)
	// owndir.CacheDir decides once per process; this test's own, made
	// and checked the same way.
	dir := filepath.Join(t.TempDir(), "sonix-run")
	useCacheDir(t, dir)
	file := filepath.Join(dir, "virtiofsd-flavours.json")

	find := func(wantRuns int, want Daemon) {
		t.Helper()
		d, err := Find(context.Background())
		if err != nil {
			t.Fatalf("Find: %v", err)
		}
		if !reflect.DeepEqual(*d, want) {
			t.Errorf("Find = %+v, want %+v", *d, want)
		}
		if got := fake.runs(); got != wantRuns {
			t.Errorf("--help ran %d times, want %d", got, wantRuns)
		}
		if c := readFlavourCache(file); c == nil {
			t.Errorf("no valid cache file after Find")
		}
	}
	rust := Daemon{Path: fake.path, Flavour: Rust, ReadOnly: true, InodeFileHandles: true, TranslateIDs: true}
	legacy := Daemon{Path: fake.path, Flavour: Legacy}

	find(1, rust) // learnt
	find(1, rust) // remembered

	// A new binary at the same path is asked again.
	fake.write(t, legacyHelp, "# another build\n")
	find(2, legacy)
	find(2, legacy)

	// Same size and inode, but rewritten in place: mtime and ctime differ.
	if err := os.Chtimes(fake.path, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	find(3, legacy)

	// A corrupt, a foreign and an over-long file are ignored and rewritten.
	for _, bad := range []string{
		"{\"format\": \"sonix-run virtiofsd flav",
		`{"format":"someone else's","daemons":[]}`,
		`{"format":"` + flavourCacheFormat + `","daemons":[{"path":"relative","file":{},"flavour":"rust"}]}`,
		`{"format":"` + flavourCacheFormat + `","daemons":[{"path":"` + fake.path + `","file":{},"flavour":"go"}]}`,
		// What sonix-run wrote before translateIds: it never says whether
		// the daemon can translate ids, so it is asked again.
		`{"format":"sonix-run virtiofsd flavours v1","daemons":[]}`,
		strings.Repeat(" ", maxCacheBytes+1),
	} {
		if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		want := fake.runs() + 1
		find(want, legacy)
		find(want, legacy)
	}

	// Written by another user: not trusted (it could name any flavour).
	if os.Geteuid() == 0 {
		if err := os.Chown(file, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if d, ok := cachedDaemon(file, fake.path); ok {
			t.Errorf("trusted a cache file of another user: %+v", d)
		}
		os.Remove(file)
	}

	// Only the cache file is left: no temporary file.
	entries, err := os.ReadDir(filepath.Dir(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != filepath.Base(file) {
			t.Errorf("left in the cache directory: %s", e.Name())
		}
	}
}

// Several binaries are remembered; the oldest drop out past the limit.
func TestFlavourCacheKeepsSeveralBinaries(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the cache is kept on Linux only")
	}
	file := filepath.Join(t.TempDir(), "cache.json")
	var daemons []*Daemon
	for i := 0; i < maxCacheEntries+2; i++ {
		d := &Daemon{Path: fakeBinary(t, "#!/bin/sh\n"), Flavour: Rust, ReadOnly: i%2 == 0}
		daemons = append(daemons, d)
		rememberDaemon(file, d)
	}
	for i, d := range daemons {
		got, ok := cachedDaemon(file, d.Path)
		if i < 2 {
			if ok {
				t.Errorf("binary %d is still remembered past the limit", i)
			}
			continue
		}
		if !ok || !reflect.DeepEqual(got, d) {
			t.Errorf("binary %d: got %+v, %v; want %+v", i, got, ok, d)
		}
	}
}

// useCacheDir makes dir, as owndir makes a cache directory, the cache
// directory for the test.
func useCacheDir(t *testing.T, dir string) {
	t.Helper()
	if err := owndir.EnsureIn(dir, owndir.Cache); err != nil {
		t.Fatal(err)
	}
	cacheDir = func() (string, error) { return dir, nil }
	t.Cleanup(func() { cacheDir = owndir.CacheDir })
}

// No cache directory to trust (owndir refused them all): no cache, and
// Find still works.
func TestFlavourCacheWithoutADirectory(t *testing.T) {
	fake := newCountingDaemon(t, readHelp(t, "help-legacy-7.2.txt"))
	t.Setenv(EnvVar, fake.path)
	cacheDir = func() (string, error) { return "", errors.New("no home") }
	t.Cleanup(func() { cacheDir = owndir.CacheDir })
	for want := 1; want <= 2; want++ {
		if d, err := Find(context.Background()); err != nil || d.Flavour != Legacy {
			t.Fatalf("Find = %+v, %v", d, err)
		}
		if got := fake.runs(); got != want {
			t.Errorf("--help ran %d times, want %d (nothing to remember it in)", got, want)
		}
	}
}

func FuzzDecodeFlavourCache(f *testing.F) {
	valid, _ := json.Marshal(flavourCache{Format: flavourCacheFormat, Daemons: []cachedEntry{
		{Path: "/usr/lib/qemu/virtiofsd", File: binaryID{Dev: 1, Inode: 2, Size: 3, MtimeNs: 4, CtimeNs: 5}, Flavour: "legacy"},
		{Path: "/usr/libexec/virtiofsd", Flavour: "rust", ReadOnly: true, InodeFileHandles: true, TranslateIDs: true},
	}})
	f.Add(valid)
	f.Add([]byte(""))
	f.Add([]byte("{}"))
	f.Add([]byte(`{"format":"x"}`))
	f.Add([]byte(`{"format":"` + flavourCacheFormat + `","daemons":null} {}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeFlavourCache(data)
		if err != nil {
			return
		}
		// What decodes is well formed, and survives a round trip.
		for _, e := range c.Daemons {
			if _, ok := flavourOf(e.Flavour); !ok || !filepath.IsAbs(e.Path) {
				t.Fatalf("accepted a bad entry %+v", e)
			}
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeFlavourCache(again)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %+v, %v; want %+v", c2, err, c)
		}
	})
}
