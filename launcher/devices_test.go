package launcher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	good := map[string]Forward{
		"tcp:2222:22": {"tcp", 2222, 22},
		"udp:5353:53": {"udp", 5353, 53},
	}
	for in, want := range good {
		if got, err := ParseForward(in); err != nil || got != want {
			t.Errorf("ParseForward(%q) = %+v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "2222:22", "sctp:1:2", "tcp:0:22", "tcp:70000:22", "tcp:a:22", "tcp:1:2:3"} {
		if _, err := ParseForward(in); err == nil || !strings.Contains(err.Error(), "tcp:HOSTPORT:GUESTPORT") {
			t.Errorf("ParseForward(%q): %v", in, err)
		}
	}
}

func TestParseDisk(t *testing.T) {
	dir := t.TempDir()
	raw, qcow := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.qcow2")
	os.WriteFile(raw, nil, 0o644)
	os.WriteFile(qcow, nil, 0o644)
	tests := []struct {
		in   string
		want Disk
	}{
		{raw, Disk{raw, "raw", false}},
		{raw + ",ro", Disk{raw, "raw", true}},
		{qcow, Disk{qcow, "qcow2", false}},
		{raw + ",format=qcow2,ro", Disk{raw, "qcow2", true}},
		{qcow + ",format=raw", Disk{qcow, "raw", false}},
	}
	for _, tt := range tests {
		if got, err := ParseDisk(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseDisk(%q) = %+v, %v", tt.in, got, err)
		}
	}
	for _, in := range []string{raw + ",format=vmdk", raw + ",rw", ",ro", filepath.Join(dir, "missing.img"), dir} {
		if _, err := ParseDisk(in); err == nil {
			t.Errorf("ParseDisk(%q) accepted", in)
		}
	}
}

func TestParseShare(t *testing.T) {
	dir := t.TempDir()
	if s, err := ParseShare(dir + ":data:ro"); err != nil || s.Tag != "data" || !s.ReadOnly || s.HostDir != dir {
		t.Errorf("got %+v, %v", s, err)
	}
	if s, err := ParseShare(dir + ":data"); err != nil || s.ReadOnly {
		t.Errorf("got %+v, %v", s, err)
	}
	for _, in := range []string{dir, dir + ":", ":tag", dir + ":t:rw", dir + ":t:ro:x", filepath.Join(dir, "nope") + ":t"} {
		if _, err := ParseShare(in); err == nil {
			t.Errorf("ParseShare(%q) accepted", in)
		}
	}
}
