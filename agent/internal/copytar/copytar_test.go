package copytar

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func archive(t testing.TB, entries ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h := h
		body := []byte(nil)
		if h.Typeflag == tar.TypeReg {
			body = []byte(h.Linkname) // the body, for brevity
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

func dir(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755} }
func file(name, body string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Linkname: body}
}
func link(name, target string) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
}

func TestExtractRefusesHostileArchives(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []tar.Header
		want    string
	}{
		{"dot-dot", []tar.Header{dir("top/"), file("top/../../x", "evil", 0o644)}, "components are refused"},
		{"dot-dot top", []tar.Header{file("../x", "evil", 0o644)}, "components are refused"},
		{"absolute", []tar.Header{file("/x", "evil", 0o644)}, "absolute names are refused"},
		{"dot", []tar.Header{dir("top/"), file("top/./x", "", 0o644)}, "components are refused"},
		{"double slash", []tar.Header{dir("top/"), file("top//x", "", 0o644)}, "components are refused"},
		{"write through a link", []tar.Header{dir("top/"), link("top/l", ".."), file("top/l/x", "evil", 0o644)}, "is not a directory (symbolic links are not followed)"},
		{"dir through a link", []tar.Header{dir("top/"), link("top/l", "/"), dir("top/l/x/")}, "is not a directory"},
		{"link replaced by a dir", []tar.Header{dir("top/"), link("top/l", ".."), dir("top/l/")}, "cannot replace"},
		{"missing parent", []tar.Header{dir("top/"), file("top/a/b", "x", 0o644)}, "its directory"},
		{"two tops", []tar.Header{file("a", "", 0o644), file("b", "", 0o644)}, "not under the top-level entry"},
		{"hard link", []tar.Header{dir("top/"), {Name: "top/h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}, "is not supported"},
		{"fifo", []tar.Header{{Name: "f", Typeflag: tar.TypeFifo}}, "is not supported"},
		{"empty link", []tar.Header{link("l", "")}, "empty target"},
		{"empty", nil, "the archive is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			dst := filepath.Join(outer, "dst")
			os.Mkdir(dst, 0o755)
			err := Extract(bytes.NewReader(archive(t, tc.entries...)), dst, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			assertNothingOutside(t, outer, dst)
		})
	}
}

// assertNothingOutside checks that outer holds only dst.
func assertNothingOutside(t testing.TB, outer, dst string) {
	t.Helper()
	entries, _ := os.ReadDir(outer)
	for _, e := range entries {
		if filepath.Join(outer, e.Name()) != dst {
			t.Fatalf("%s was written outside the destination", e.Name())
		}
	}
	if _, err := os.Lstat("/x"); err == nil {
		t.Fatal("/x exists")
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
	dst := t.TempDir()
	err = Extract(bytes.NewReader(sparseArchive()), dst, Options{})
	if err == nil || !strings.Contains(err.Error(), "sparse files are not supported") {
		t.Fatalf("err %v", err)
	}
}

func TestExtractDoesNotFollowExistingLinks(t *testing.T) {
	outer := t.TempDir()
	dst := filepath.Join(outer, "dst")
	victim := filepath.Join(outer, "victim")
	os.Mkdir(dst, 0o755)
	os.Mkdir(victim, 0o755)
	// A link already in the destination, named like the archive's top.
	os.Symlink(victim, filepath.Join(dst, "top"))
	err := Extract(bytes.NewReader(archive(t, dir("top/"), file("top/x", "evil", 0o644))), dst, Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot replace") {
		t.Fatalf("err %v", err)
	}
	// A file over an existing link replaces the link, not its target.
	os.WriteFile(filepath.Join(victim, "f"), []byte("keep"), 0o644)
	os.Symlink(filepath.Join(victim, "f"), filepath.Join(dst, "f"))
	if err := Extract(bytes.NewReader(archive(t, file("f", "new", 0o644))), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(victim, "f")); string(b) != "keep" {
		t.Fatalf("wrote through a link: %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(dst, "f")); !fi.Mode().IsRegular() {
		t.Fatal("the link was not replaced")
	}
}

func TestExtractDestination(t *testing.T) {
	a := archive(t, dir("top/"), file("top/f", "hi", 0o600))
	base := t.TempDir()
	// An existing directory: inside it.
	os.Mkdir(filepath.Join(base, "d"), 0o755)
	if err := Extract(bytes.NewReader(a), filepath.Join(base, "d"), Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "d", "top", "f")); string(b) != "hi" {
		t.Fatal("not extracted inside the directory")
	}
	// A new name.
	if err := Extract(bytes.NewReader(a), filepath.Join(base, "new"), Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "new", "f")); string(b) != "hi" {
		t.Fatal("not extracted under the new name")
	}
	// Reached through a link: the user's choice.
	os.Symlink(filepath.Join(base, "d"), filepath.Join(base, "via"))
	if err := Extract(bytes.NewReader(archive(t, file("g", "x", 0o644))), filepath.Join(base, "via"), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "d", "g")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dst, want string }{
		{filepath.Join(base, "missing", "x"), "its directory"},
		{filepath.Join(base, "missing") + "/", "no such directory"},
		{filepath.Join(base, "new", "f", "x"), "not a directory"},
	} {
		if err := Extract(bytes.NewReader(a), tc.dst, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.dst, err, tc.want)
		}
	}
	// A directory onto a file.
	os.WriteFile(filepath.Join(base, "plain"), nil, 0o644)
	if err := Extract(bytes.NewReader(a), filepath.Join(base, "plain"), Options{}); err == nil || !strings.Contains(err.Error(), "cannot replace") {
		t.Errorf("a directory onto a file: %v", err)
	}
}

func TestExtractModes(t *testing.T) {
	a := archive(t, tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o555},
		file("top/suid", "x", 0o4755), file("top/sgid", "x", 0o2711), tar.Header{Name: "top/sticky/", Typeflag: tar.TypeDir, Mode: 0o1777})
	for _, keep := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "out")
		if err := Extract(bytes.NewReader(a), dst, Options{KeepSetID: keep}); err != nil {
			t.Fatal(err)
		}
		want := map[string]fs.FileMode{"": fs.ModeDir | 0o555, "suid": 0o755, "sgid": 0o711, "sticky": fs.ModeDir | fs.ModeSticky | 0o777}
		if keep {
			want["suid"] |= fs.ModeSetuid
			want["sgid"] |= fs.ModeSetgid
		}
		for name, m := range want {
			fi, err := os.Lstat(filepath.Join(dst, name))
			if err != nil || fi.Mode() != m {
				t.Errorf("keep %v: %s: %v, want %v (%v)", keep, name, fi.Mode(), m, err)
			}
		}
		os.Chmod(dst, 0o755) // so that the test can remove it
	}
}

func TestWriteRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o750)
	os.WriteFile(filepath.Join(src, "a"), []byte("aaa"), 0o640)
	os.Symlink("a", filepath.Join(src, "l"))
	var buf bytes.Buffer
	if err := Write(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := Extract(&buf, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "a")); string(b) != "aaa" {
		t.Fatal("contents")
	}
	if l, _ := os.Readlink(filepath.Join(dst, "l")); l != "a" {
		t.Fatal("link")
	}
	if err := Write(&buf, "/"); err == nil || !strings.Contains(err.Error(), "must end in a name") {
		t.Fatalf("the root: %v", err)
	}
}

// FuzzExtract extracts arbitrary archives: whatever they hold, nothing
// lands outside the destination.
func FuzzExtract(f *testing.F) {
	f.Add(archive(f, dir("top/"), file("top/f", "x", 0o644), link("top/l", "/etc")))
	f.Add(archive(f, dir("top/"), link("top/l", ".."), file("top/l/x", "evil", 0o644)))
	f.Add(archive(f, file("../x", "evil", 0o644)))
	f.Add([]byte("not a tar archive"))
	f.Add(sparseArchive())
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		outer, err := os.MkdirTemp(base, "")
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(outer, "dst")
		os.Mkdir(dst, 0o755)
		Extract(bytes.NewReader(data), dst, Options{})
		assertNothingOutside(t, outer, dst)
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755) // so that it can be removed
			}
			return nil
		})
		os.RemoveAll(outer)
	})
}
