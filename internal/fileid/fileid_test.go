package fileid

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestIDChangesWithTheFile(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("no file identity here")
	}
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("one"), 0o644)
	a, ok := Stat(p)
	if !ok {
		t.Fatal("no ID")
	}
	if b, _ := Stat(p); b != a {
		t.Errorf("the same file, two IDs: %+v %+v", a, b)
	}
	// Rewritten in place with the same size and modification time: the
	// change time still moves.
	mtime := time.Unix(0, a.MtimeNs)
	time.Sleep(10 * time.Millisecond) // the change time must be able to differ
	os.WriteFile(p, []byte("two"), 0o644)
	os.Chtimes(p, mtime, mtime)
	if c, _ := Stat(p); c == a {
		t.Errorf("a rewritten file kept its ID %+v", c)
	}
	if _, ok := Stat(filepath.Join(t.TempDir(), "missing")); ok {
		t.Error("a missing file has an ID")
	}
}
