package virtiofs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/sonix-run/sonix-run/internal/fileid"
	"github.com/sonix-run/sonix-run/internal/owndir"
)

// What a virtiofsd binary is does not change until the binary does, so it is
// remembered per binary in the user's cache directory and its --help (a
// process start on every run) is skipped. A binary is known by its path and
// its file's identity (device, inode, size, mtime, ctime): replacing or
// rewriting it changes at least one of them. The file is only a hint: a
// missing, corrupt, foreign or unreadable one is ignored (and rewritten), and
// failing to write it is harmless.

// flavourCacheFormat marks the file's layout; a file without it is not ours.
// v2 added translateIds: a v1 file, which never says it, is not read.
const flavourCacheFormat = "sonix-run virtiofsd flavours v2"

// flavourCacheName is the file's name in sonix-run's cache directory.
const flavourCacheName = "virtiofsd-flavours.json"

const (
	maxCacheEntries = 16      // binaries remembered, most recent first
	maxCacheBytes   = 1 << 16 // a larger file is not one we wrote
)

type flavourCache struct {
	Format  string        `json:"format"`
	Daemons []cachedEntry `json:"daemons"`
}

type cachedEntry struct {
	Path             string   `json:"path"`
	File             binaryID `json:"file"`
	Flavour          string   `json:"flavour"` // "rust" or "legacy"
	ReadOnly         bool     `json:"readonly,omitempty"`
	InodeFileHandles bool     `json:"inodeFileHandles,omitempty"`
	TranslateIDs     bool     `json:"translateIds,omitempty"`
}

// binaryID is what identifies one version of a file.
type binaryID = fileid.ID

var flavourNames = map[Flavour]string{Rust: "rust", Legacy: "legacy"}

// cacheDir is sonix-run's own cache directory, made and checked (a
// variable for tests).
var cacheDir = owndir.CacheDir

// flavourCacheFile is the cache's path in sonix-run's cache directory
// ($XDG_CACHE_HOME/sonix-run, ~/.cache/sonix-run, or its fallback: see
// owndir.CacheDir); "" when there is no cache directory to trust.
func flavourCacheFile() string {
	dir, err := cacheDir()
	if err != nil || dir == "" {
		return ""
	}
	return filepath.Join(dir, flavourCacheName)
}

// decodeFlavourCache reads the cache file's contents; an error means the file
// is to be ignored.
func decodeFlavourCache(data []byte) (*flavourCache, error) {
	var c flavourCache
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	if c.Format != flavourCacheFormat {
		return nil, errors.New("not a sonix-run virtiofsd cache")
	}
	if len(c.Daemons) > maxCacheEntries {
		return nil, errors.New("too many entries")
	}
	for _, e := range c.Daemons {
		if _, ok := flavourOf(e.Flavour); !ok || !filepath.IsAbs(e.Path) {
			return nil, errors.New("bad entry")
		}
	}
	return &c, nil
}

func flavourOf(name string) (Flavour, bool) {
	for f, n := range flavourNames {
		if n == name {
			return f, true
		}
	}
	return 0, false
}

func (c *flavourCache) lookup(path string, id binaryID) (*Daemon, bool) {
	for _, e := range c.Daemons {
		if e.Path == path && e.File == id {
			f, _ := flavourOf(e.Flavour)
			return &Daemon{Path: path, Flavour: f, ReadOnly: e.ReadOnly, InodeFileHandles: e.InodeFileHandles, TranslateIDs: e.TranslateIDs}, true
		}
	}
	return nil, false
}

// remember puts d first, dropping what was known of its path and the oldest
// entries beyond the limit.
func (c *flavourCache) remember(d *Daemon, id binaryID) {
	entries := []cachedEntry{{Path: d.Path, File: id, Flavour: flavourNames[d.Flavour], ReadOnly: d.ReadOnly, InodeFileHandles: d.InodeFileHandles, TranslateIDs: d.TranslateIDs}}
	for _, e := range c.Daemons {
		if e.Path != d.Path && len(entries) < maxCacheEntries {
			entries = append(entries, e)
		}
	}
	c.Daemons = entries
}

// readFlavourCache returns the cache in file, or nil when there is none to
// trust: missing, unreadable, too large, corrupt, or owned by another user
// (whose entries could name any flavour).
func readFlavourCache(file string) *flavourCache {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || !ownedByUs(st) {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCacheBytes+1))
	if err != nil || len(data) > maxCacheBytes {
		return nil
	}
	c, err := decodeFlavourCache(data)
	if err != nil {
		return nil
	}
	return c
}

// cachedDaemon returns what the cache in file knows of the binary at path.
func cachedDaemon(file, path string) (*Daemon, bool) {
	if file == "" {
		return nil, false
	}
	id, ok := fileid.Stat(path)
	if !ok {
		return nil, false
	}
	c := readFlavourCache(file)
	if c == nil {
		return nil, false
	}
	return c.lookup(path, id)
}

// rememberDaemon records d in the cache in file, which is in an own
// directory (owndir: no one else can plant or swap a file there). The new
// file replaces the old one at once (a rename, never following a link), so
// a run that reads it at the same time, or a run killed while writing it,
// never sees half a file; two runs writing at once lose one entry at worst,
// which the next run adds again.
func rememberDaemon(file string, d *Daemon) {
	if file == "" || d.Flavour == 0 {
		return
	}
	id, ok := fileid.Stat(d.Path)
	if !ok {
		return
	}
	c := readFlavourCache(file)
	if c == nil {
		c = &flavourCache{Format: flavourCacheFormat}
	}
	c.remember(d, id)
	data, err := json.MarshalIndent(c, "", "\t")
	if err != nil {
		return
	}
	_ = owndir.WriteFile(filepath.Dir(file), filepath.Base(file), append(data, '\n'), 0o644)
}
