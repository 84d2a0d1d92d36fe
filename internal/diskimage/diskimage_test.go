package diskimage

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCreateRaw(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.img")
	if created, err := CreateRaw(p, 8<<20); err != nil || !created {
		t.Fatalf("CreateRaw = %v, %v", created, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 8<<20 {
		t.Errorf("image %v, %v", fi, err)
	}
	os.WriteFile(p, []byte("kept"), 0o600)
	if created, err := CreateRaw(p, 8<<20); err != nil || created {
		t.Errorf("an existing image: %v, %v", created, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "kept" {
		t.Error("an existing image was changed")
	}
	// A link at the name is left alone, never followed.
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	link := filepath.Join(dir, "link.img")
	os.Symlink(victim, link)
	if created, err := CreateRaw(link, 8<<20); err != nil || created {
		t.Errorf("over a link: %v, %v", created, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Error("the link's target was changed")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("left behind: %v", entries)
	}
}
