package kernelimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/fileid"
	"github.com/sonix-run/sonix-run/internal/owndir"
)

// DefaultMaxBytes bounds a cache: about fifteen x86_64 vmlinux files of
// Debian's size, more of smaller kernels.
const DefaultMaxBytes = 1 << 30

// extractVersion names what this package writes for an image; change it
// when that changes, and older entries stop being found (and age out).
const extractVersion = 1

// staleAge is how old a temporary directory or lock file must be before
// eviction takes it for the leftover of a killed run: decompressing takes
// seconds.
const staleAge = time.Hour

// maxMetaSize bounds the metadata file a cache entry holds.
const maxMetaSize = 64 << 10

// ErrBusy is returned by BootableELF's fill (and reported as its reason)
// when another run holds the lock to decompress the same kernel.
var ErrBusy = errors.New("another run is decompressing this kernel right now")

// ErrNoPVH is wrapped by the error for an x86 bzImage whose vmlinux lacks
// the PVH entry note (a kernel built without CONFIG_PVH): QEMU cannot boot
// that vmlinux with -kernel, so the cache keeps no copy of it.
var ErrNoPVH = errors.New("its vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY; the kernel was built without CONFIG_PVH)")

// Cache keeps uncompressed kernels, keyed by the SHA-256 of the compressed
// image's content. Layout under Dir:
//
//	<sha256>-x<version>/meta.json   what the image and its output are, or why it failed
//	<sha256>-x<version>/vmlinux     (or Image) the uncompressed kernel
//	index/<sha256 of file identity> the content hash of one version of a file
//	.lock-<sha256>                  held while one run decompresses
//	.tmp-*, .trash-*                being written, being deleted
//
// An entry appears with one rename of its complete, synced directory, so
// parallel runs and a run killed half-way never leave a partial entry under
// the final name. Deleting Dir at any time is safe: the next run starts
// afresh. A Cache is safe for concurrent use.
//
// Dir must be the user's and writable by no one else (owndir.Cache), else
// it is not used at all; every file is created in it without following a
// link (a new file renamed into place, or O_EXCL|O_NOFOLLOW), and read
// without following one.
type Cache struct {
	dir      string
	maxBytes int64
	// noLock makes every fill decompress, for tests that race publishers.
	noLock bool
}

// DefaultCacheDir is where the kernel cache lives: kernels in sonix-run's
// cache directory (owndir.CacheDir: sonix-run under $XDG_CACHE_HOME or
// ~/.cache on Linux, ~/Library/Caches on macOS; else, with no usable home,
// in the private directory in the temporary directory). An error when
// there is no usable place: then the caller does without the cache.
func DefaultCacheDir() (string, error) {
	d, err := owndir.CacheDir()
	if err != nil {
		return "", fmt.Errorf("kernel cache: %w", err)
	}
	return filepath.Join(d, "kernels"), nil
}

// NewCache returns the cache in dir (created when first written, its parent
// must exist), holding
// at most maxBytes (DefaultMaxBytes when maxBytes <= 0) besides the entry
// in use.
func NewCache(dir string, maxBytes int64) *Cache {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Cache{dir: dir, maxBytes: maxBytes}
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Entry is an uncompressed kernel the cache handed out.
type Entry struct {
	// Path is the uncompressed kernel: a file in the cache, or the image
	// itself when it needed no decompressing (then Cached is false).
	Path   string
	Cached bool
	// Hit says the cache held the entry already; false when this call
	// decompressed it.
	Hit bool
	// Source is the image; Info what Path holds (Format ELF or Image,
	// Release from the kernel's banner, PVH for an ELF).
	Source Info
	Info   Info
}

// Uncompressed returns an uncompressed kernel equivalent to the image at
// imagePath: the image itself when it is an ELF or a raw Image, else its
// decompressed copy in the cache, decompressed now on a miss. An x86
// bzImage's vmlinux is kept only when it carries the PVH note; otherwise
// the error wraps ErrNoPVH. When another run is decompressing the same
// image, this call decompresses it too rather than wait; the first to
// finish publishes.
func (c *Cache) Uncompressed(ctx context.Context, imagePath string) (Entry, error) {
	return c.get(ctx, imagePath, fillAlways)
}

// ErrNotCached is returned by CachedELF's lookup (and reported as its
// reason) when the cache holds no copy of the kernel yet.
var ErrNotCached = errors.New("the kernel cache holds no vmlinux of it yet")

// BootableELF returns an ELF vmlinux that QEMU can boot through its PVH
// entry with -kernel, for the x86 kernel image at imagePath: the image
// itself when it is such an ELF, else the vmlinux extracted from the
// bzImage into the cache (now, on a miss). When there is none, elfPath is
// "" and note says why (not a bzImage, no PVH note, lzo, another run is
// extracting it right now, the cache is unwritable, a corrupt payload): the
// caller boots the image as it is and prints note with -v. When elfPath is
// set, note says where it came from. err is non-nil only when ctx ended.
func (c *Cache) BootableELF(ctx context.Context, imagePath string) (elfPath, note string, err error) {
	return c.bootableELF(ctx, imagePath, fillUnlessBusy)
}

// CachedELF is BootableELF without decompressing anything: on a miss
// elfPath is "" and note says so (ErrNotCached). For a hypervisor on which
// the kernel decompresses itself faster than this package would (KVM), a
// miss is better booted as it is.
func (c *Cache) CachedELF(ctx context.Context, imagePath string) (elfPath, note string, err error) {
	return c.bootableELF(ctx, imagePath, fillNever)
}

func (c *Cache) bootableELF(ctx context.Context, imagePath string, fill fillMode) (elfPath, note string, err error) {
	f, err := os.Open(imagePath)
	if err != nil {
		return "", fmt.Sprintf("kernel image: %v", err), nil
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return "", fmt.Sprintf("kernel image: %v", err), nil
	}
	src, err := inspect(f, st.Size())
	f.Close()
	if err != nil {
		return "", fmt.Sprintf("kernel image %s: %v", imagePath, err), nil
	}
	switch {
	case src.Format == ELF && src.PVH && (src.Arch == X86_64 || src.Arch == I386):
		return imagePath, "the kernel is an ELF with a PVH entry note already", nil
	case src.Format == ELF:
		return "", fmt.Sprintf("kernel %s is an ELF vmlinux for %s without a PVH entry note", imagePath, orUnknown(src.Arch)), nil
	case src.Format != BzImage:
		return "", fmt.Sprintf("kernel %s is an %s (%s), not an x86 bzImage", imagePath, src.Format, orUnknown(src.Arch)), nil
	case src.Compression == Lzo:
		return "", fmt.Sprintf("kernel %s is compressed with lzo, which sonix-run cannot decompress", imagePath), nil
	}
	start := time.Now()
	e, err := c.get(ctx, imagePath, fill)
	if ctx.Err() != nil {
		return "", "", ctx.Err()
	}
	switch {
	case errors.Is(err, ErrNotCached):
		return "", fmt.Sprintf("kernel %s: %v", imagePath, err), nil
	case errors.Is(err, ErrBusy):
		return "", fmt.Sprintf("kernel %s: %v; booting the bzImage this time", imagePath, err), nil
	case err != nil:
		return "", err.Error(), nil
	case e.Hit:
		return e.Path, fmt.Sprintf("vmlinux of %s from the kernel cache", imagePath), nil
	}
	return e.Path, fmt.Sprintf("vmlinux of %s extracted into the kernel cache in %.2fs", imagePath, time.Since(start).Seconds()), nil
}

func orUnknown(a Arch) string {
	if a == "" {
		return "an unknown architecture"
	}
	return string(a)
}

// meta is an entry's meta.json.
type meta struct {
	Version     int
	ImageSHA256 string
	Source      Info // Path cleared: one content may live under many names
	Out         Info // Path cleared
	// File is the uncompressed kernel's name in the entry; "" when the
	// entry remembers a failure, Error.
	File  string
	Error string `json:",omitempty"`
	// NoPVH marks the failure ErrNoPVH.
	NoPVH bool `json:",omitempty"`
}

func entryName(key string) string { return fmt.Sprintf("%s-x%d", key, extractVersion) }

// fillMode is what get does on a miss.
type fillMode int

const (
	fillAlways     fillMode = iota // decompress, even alongside another run
	fillUnlessBusy                 // decompress, or return ErrBusy while another run does
	fillNever                      // return ErrNotCached
)

// get does Uncompressed's work, filling the cache on a miss as fill says.
func (c *Cache) get(ctx context.Context, imagePath string, fill fillMode) (Entry, error) {
	f, err := os.Open(imagePath)
	if err != nil {
		return Entry{}, fmt.Errorf("kernel image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Entry{}, fmt.Errorf("kernel image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Entry{}, fmt.Errorf("kernel image %s: not a regular file", imagePath)
	}
	src, err := inspect(f, st.Size())
	if err != nil {
		return Entry{}, fmt.Errorf("kernel image %s: %w", imagePath, err)
	}
	src.Path = imagePath
	if !src.Compressed() {
		if src.Release, err = scanRelease(io.NewSectionReader(f, 0, st.Size())); err != nil {
			return Entry{}, fmt.Errorf("kernel image %s: %w", imagePath, err)
		}
		return Entry{Path: imagePath, Source: src, Info: src}, nil
	}

	// Nothing is read from, or written to, a directory another user could
	// have planted links or swapped entries in.
	if err := owndir.Check(c.dir, owndir.Cache); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("kernel cache: %w", err)
	}
	key, fromIndex, err := c.contentKey(f, st)
	if err != nil {
		return Entry{}, fmt.Errorf("kernel image %s: %w", imagePath, err)
	}
	dir := filepath.Join(c.dir, entryName(key))
	if e, err, ok := c.load(dir, key, imagePath); ok {
		return e, err
	}
	if fill == fillNever {
		return Entry{}, ErrNotCached
	}
	if err := owndir.Ensure(c.dir, owndir.Cache); err != nil {
		return Entry{}, fmt.Errorf("kernel cache: %w", err)
	}
	if !fromIndex {
		c.remember(st, key)
	}
	if !c.noLock {
		unlock, ok, err := tryLock(filepath.Join(c.dir, ".lock-"+key))
		switch {
		case err != nil:
			return Entry{}, fmt.Errorf("kernel cache: %w", err)
		case ok:
			defer unlock()
			// The run that held the lock may have just published.
			if e, err, ok := c.load(dir, key, imagePath); ok {
				return e, err
			}
		case fill == fillUnlessBusy:
			return Entry{}, ErrBusy
		}
	}
	return c.fill(ctx, f, st, src, key, dir)
}

// fill decompresses the image f into a new entry dir and publishes it.
func (c *Cache) fill(ctx context.Context, f *os.File, st os.FileInfo, src Info, key, dir string) (_ Entry, err error) {
	tmp, err := os.MkdirTemp(c.dir, ".tmp-"+key[:16]+"-")
	if err != nil {
		return Entry{}, fmt.Errorf("kernel cache: %w", err)
	}
	defer func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}()
	name := "Image"
	if src.Format == BzImage {
		name = "vmlinux"
	}
	out, err := owndir.Create(tmp, name, 0o644) // a kernel is no secret
	if err != nil {
		return Entry{}, fmt.Errorf("kernel cache: %w", err)
	}
	_, got, err := uncompressFile(ctx, f, src.Path, st.Size(), out)
	out.Close()
	var bad *imageError
	switch {
	case ctx.Err() != nil:
		return Entry{}, ctx.Err()
	case changed(f, st):
		return Entry{}, fmt.Errorf("kernel image %s changed while it was being read", src.Path)
	case errors.As(err, &bad):
		// The image itself is at fault: remember that, so that the
		// next run does not decompress it again to learn the same.
		os.Remove(out.Name())
		m := meta{Version: extractVersion, ImageSHA256: key, Source: src, Error: err.Error()}
		m.Source.Path = ""
		if perr := c.publish(tmp, dir, m); perr == nil {
			tmp = ""
			c.evict(dir)
		}
		return Entry{}, err
	case err != nil:
		return Entry{}, err
	}
	m := meta{Version: extractVersion, ImageSHA256: key, Source: src, Out: got, File: name}
	m.Source.Path, m.Out.Path = "", ""
	if src.Format == BzImage && !got.PVH {
		os.Remove(out.Name())
		m.File, m.Error, m.NoPVH = "", ErrNoPVH.Error(), true
	}
	if err := c.publish(tmp, dir, m); err != nil {
		// Another run may have published first: use its entry.
		if e, lerr, ok := c.load(dir, key, src.Path); ok {
			return e, lerr
		}
		return Entry{}, err
	}
	tmp = ""
	c.evict(dir)
	if m.File == "" {
		return Entry{}, fmt.Errorf("kernel image %s: %w", src.Path, ErrNoPVH)
	}
	got.Path = filepath.Join(dir, name)
	return Entry{Path: got.Path, Cached: true, Source: src, Info: got}, nil
}

// publish writes m into tmp, syncs it and renames tmp to dir. The rename
// fails when dir exists: another run published first.
func (c *Cache) publish(tmp, dir string, m meta) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	mf, err := owndir.Create(tmp, "meta.json", 0o644)
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	_, err = mf.Write(data)
	if err == nil {
		err = mf.Sync()
	}
	if cerr := mf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	syncDir(tmp)
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	syncDir(c.dir)
	return nil
}

// syncDir makes a rename or a creation in dir durable, where the system
// allows it; a failure costs only a re-extraction after a crash.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// load returns the entry in dir when it is whole: meta.json parses and
// matches key, and the kernel file has the size and headers it records.
// ok is false on a miss; a damaged entry is removed (and ok is false). A
// remembered failure comes back as err with ok true.
func (c *Cache) load(dir, key, imagePath string) (e Entry, err error, ok bool) {
	seen, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, nil, false
	}
	data, err := readBounded(filepath.Join(dir, "meta.json"), maxMetaSize)
	if errors.Is(err, fs.ErrNotExist) {
		err = errors.New("no meta.json")
	}
	var m meta
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err == nil && (m.Version != extractVersion || m.ImageSHA256 != key) {
		err = errors.New("meta.json names another image or version")
	}
	if err == nil && m.File == "" && m.Error == "" {
		err = errors.New("meta.json names no file and no error")
	}
	if err == nil && m.File != "" && m.File != "vmlinux" && m.File != "Image" {
		err = fmt.Errorf("meta.json names file %q", m.File)
	}
	if err == nil && m.File != "" {
		err = checkEntryFile(filepath.Join(dir, m.File), m)
	}
	if err != nil {
		c.removeIfSame(dir, seen)
		return Entry{}, nil, false
	}
	now := time.Now()
	os.Chtimes(dir, now, now) // the eviction order: least recently used first
	m.Source.Path = imagePath
	if m.File == "" {
		if m.NoPVH {
			return Entry{}, fmt.Errorf("kernel image %s: %w", imagePath, ErrNoPVH), true
		}
		return Entry{}, &imageError{errors.New(m.Error)}, true
	}
	m.Out.Path = filepath.Join(dir, m.File)
	return Entry{Path: m.Out.Path, Cached: true, Hit: true, Source: m.Source, Info: m.Out}, nil, true
}

// checkEntryFile verifies a cached kernel against its meta: its size, its
// headers, and for an ELF the PVH note; a truncated or overwritten file
// fails.
func checkEntryFile(path string, m meta) error {
	f, err := openNoFollow(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != m.Out.Size {
		return fmt.Errorf("%s is %d bytes, meta.json says %d", path, st.Size(), m.Out.Size)
	}
	got, err := verifyUncompressed(f, st.Size(), m.Source)
	if err != nil {
		return err
	}
	if got.Format != m.Out.Format || got.Arch != m.Out.Arch || got.PVH != m.Out.PVH || got.PVHEntry != m.Out.PVHEntry {
		return fmt.Errorf("%s does not match meta.json", path)
	}
	return nil
}

// openNoFollow opens path for reading; a link at path is an error.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := openNoFollow(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// remove takes dir out of the cache: first renamed away, so that no run
// sees it half deleted, then deleted.
func (c *Cache) remove(dir string) { c.removeIfSame(dir, nil) }

// removeIfSame removes dir if it is still the directory seen (any, when
// seen is nil): another run may have replaced a damaged entry with a good
// one since this run looked, and that one must stay.
func (c *Cache) removeIfSame(dir string, seen os.FileInfo) {
	trash, err := os.MkdirTemp(c.dir, ".trash-")
	if err != nil {
		return
	}
	defer os.RemoveAll(trash)
	moved := filepath.Join(trash, "entry")
	if err := os.Rename(dir, moved); err != nil {
		return
	}
	if seen != nil {
		if now, err := os.Stat(moved); err == nil && !os.SameFile(seen, now) {
			// Not the one seen: put it back, unless yet another run
			// has published meanwhile.
			if os.Rename(moved, dir) == nil {
				return
			}
		}
	}
}

// contentKey returns the hex SHA-256 of f's content. A file seen before,
// of the same device, inode, size, modification and change time, is looked
// up in the index instead of hashed again (fromIndex).
func (c *Cache) contentKey(f *os.File, st os.FileInfo) (key string, fromIndex bool, err error) {
	if idx := c.indexPath(st); idx != "" {
		if data, err := readBounded(idx, 128); err == nil && isHexKey(string(data)) {
			return string(data), true, nil
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		return "", false, err
	}
	return hex.EncodeToString(h.Sum(nil)), false, nil
}

// indexPath is the index file for this version of a file; "" where the
// system gives no change time.
func (c *Cache) indexPath(st os.FileInfo) string {
	f, ok := fileid.Of(st)
	if !ok {
		return ""
	}
	id := sha256.Sum256(fmt.Appendf(nil, "%d:%d:%d:%d:%d", f.Dev, f.Inode, f.Size, f.MtimeNs, f.CtimeNs))
	return filepath.Join(c.dir, "index", hex.EncodeToString(id[:16]))
}

// remember records key as the content hash of the file version st names.
// Failing to is harmless: the next run hashes again.
func (c *Cache) remember(st os.FileInfo, key string) {
	idx := c.indexPath(st)
	if idx == "" {
		return
	}
	if err := owndir.Ensure(filepath.Dir(idx), owndir.Cache); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(idx), ".tmp-")
	if err != nil {
		return
	}
	_, err = tmp.WriteString(key)
	if cerr := tmp.Close(); err == nil && cerr == nil {
		if os.Rename(tmp.Name(), idx) == nil {
			return
		}
	}
	os.Remove(tmp.Name())
}

func isHexKey(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// changed reports whether f's content may differ from when st was taken.
// The change time is left out: making or removing a hard link changes it,
// and test harnesses hard-link kernels all the time.
func changed(f *os.File, st os.FileInfo) bool {
	now, err := f.Stat()
	return err != nil || now.Size() != st.Size() || !now.ModTime().Equal(st.ModTime())
}

// evict removes the least recently used entries beyond the cache's bound,
// never keep (the entry just produced), and leftovers of killed runs.
func (c *Cache) evict(keep string) {
	names, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type entry struct {
		path  string
		size  int64
		mtime time.Time
	}
	var entries []entry
	var total int64
	live := map[string]bool{}
	for _, d := range names {
		path := filepath.Join(c.dir, d.Name())
		info, err := d.Info()
		if err != nil {
			continue
		}
		stale := time.Since(info.ModTime()) > staleAge
		switch {
		case strings.HasPrefix(d.Name(), ".trash-"):
			os.RemoveAll(path)
		case strings.HasPrefix(d.Name(), ".tmp-"), strings.HasPrefix(d.Name(), ".lock-"):
			if stale {
				os.RemoveAll(path)
			}
		case d.IsDir() && d.Name() != "index":
			size := dirSize(path)
			entries = append(entries, entry{path, size, info.ModTime()})
			total += size
			key, _, _ := strings.Cut(d.Name(), "-")
			live[key] = true
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].mtime.Before(entries[j].mtime) })
	for _, e := range entries {
		if total <= c.maxBytes {
			break
		}
		if e.path == keep {
			continue
		}
		c.remove(e.path)
		total -= e.size
		key, _, _ := strings.Cut(filepath.Base(e.path), "-")
		delete(live, key)
	}
	// Index records of evicted content would only send the next run to a
	// miss; drop them, and those of files the cache never kept.
	idx := filepath.Join(c.dir, "index")
	records, _ := os.ReadDir(idx)
	for _, r := range records {
		path := filepath.Join(idx, r.Name())
		data, err := readBounded(path, 128)
		if err != nil || !live[string(data)] {
			if info, err := r.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
				os.Remove(path)
			}
		}
	}
}

func dirSize(dir string) int64 {
	var n int64
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		if info, err := f.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}
