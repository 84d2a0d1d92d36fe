package guest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/agent/wire"
)

const testPasswd = `root:x:0:0:root:/root:/bin/bash
# a comment
alice:x:1000:100:Alice:/home/alice:/bin/zsh
broken line
bob:x:1001:1001::/home/bob:/bin/sh
nohome:x:1002:1002:::
bad:x:notanumber:1:::
`

const testGroup = `root:x:0:
users:x:100:alice,bob
wheel:x:10:alice
bob:x:1001:
video:x:44:bob,alice
`

func writeUserFiles(t *testing.T) (string, string) {
	dir := t.TempDir()
	p, g := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	os.WriteFile(p, []byte(testPasswd), 0o644)
	os.WriteFile(g, []byte(testGroup), 0o644)
	return p, g
}

func TestResolveUser(t *testing.T) {
	passwd, group := writeUserFiles(t)
	for _, tc := range []struct {
		user string
		want account
		err  string
	}{
		{"alice", account{name: "alice", uid: 1000, gid: 100, groups: []uint32{100, 10, 44}, home: "/home/alice", shell: "/bin/zsh", setIDs: true}, ""},
		{"1000", account{name: "alice", uid: 1000, gid: 100, groups: []uint32{100, 10, 44}, home: "/home/alice", shell: "/bin/zsh", setIDs: true}, ""},
		{"alice:wheel", account{name: "alice", uid: 1000, gid: 10, groups: []uint32{10}, home: "/home/alice", shell: "/bin/zsh", setIDs: true}, ""},
		{"alice:7", account{name: "alice", uid: 1000, gid: 7, groups: []uint32{7}, home: "/home/alice", shell: "/bin/zsh", setIDs: true}, ""},
		{"bob", account{name: "bob", uid: 1001, gid: 1001, groups: []uint32{1001, 100, 44}, home: "/home/bob", shell: "/bin/sh", setIDs: true}, ""},
		{"nohome", account{name: "nohome", uid: 1002, gid: 1002, groups: []uint32{1002}, home: "/", setIDs: true}, ""},
		{"4242", account{uid: 4242, gid: 4242, groups: []uint32{4242}, home: "/", setIDs: true}, ""},
		{"4242:5", account{uid: 4242, gid: 5, groups: []uint32{5}, home: "/", setIDs: true}, ""},
		{"carol", account{}, `user "carol": not found in ` + passwd},
		{"alice:nogroup", account{}, `group "nogroup": not found in ` + group},
	} {
		spec, err := wire.ParseUser(tc.user)
		if err != nil {
			t.Fatal(err)
		}
		got, err := resolveUser(&spec, 0, passwd, group)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: err %v, want %q", tc.user, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("%s: %+v, %v; want %+v", tc.user, got, err, tc.want)
		}
	}
	self, err := resolveUser(nil, 0, passwd, group)
	if err != nil || self.name != "root" || self.home != "/root" || self.setIDs {
		t.Errorf("the agent's own user: %+v %v", self, err)
	}
	self, err = resolveUser(nil, 0, filepath.Join(t.TempDir(), "none"), group)
	if err != nil || self.home != "/root" || self.name != "" {
		t.Errorf("root without a passwd file: %+v %v", self, err)
	}
}

func TestCommandEnv(t *testing.T) {
	a := &account{name: "alice", home: "/home/alice", shell: "/bin/zsh"}
	got := commandEnv("/bin", a, true, []string{"FOO=1", "PATH=/x", "FOO=2", "TERM=vt100"})
	want := []string{"PATH=/x", "HOME=/home/alice", "USER=alice", "LOGNAME=alice", "SHELL=/bin/zsh", "TERM=vt100", "FOO=2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	got = commandEnv("/bin", &account{home: "/"}, false, nil)
	if !reflect.DeepEqual(got, []string{"PATH=/bin", "HOME=/"}) {
		t.Errorf("bare: %q", got)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	bin1, bin2 := filepath.Join(dir, "bin1"), filepath.Join(dir, "bin2")
	os.Mkdir(bin1, 0o755)
	os.Mkdir(bin2, 0o755)
	os.WriteFile(filepath.Join(bin1, "tool"), nil, 0o644) // not executable: skipped
	os.WriteFile(filepath.Join(bin2, "tool"), nil, 0o755)
	os.WriteFile(filepath.Join(bin1, "only-plain"), nil, 0o644)
	os.Mkdir(filepath.Join(bin1, "adir"), 0o755)
	path := "relative:" + bin1 + "::" + bin2
	for _, tc := range []struct {
		name, want string
		status     int
		err        string
	}{
		{"tool", filepath.Join(bin2, "tool"), 0, ""},
		{"only-plain", "", 126, "is not executable"},
		{"missing", "", 127, "not found on the PATH"},
		{"./tool", "", 127, "no such file"},
		{"bin2/tool", filepath.Join(dir, "bin2/tool"), 0, ""},
		{bin1 + "/adir", "", 126, "is a directory"},
	} {
		got, status, err := lookPath(tc.name, path, dir)
		if got != tc.want || status != tc.status || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %q %d %v; want %q %d %q", tc.name, got, status, err, tc.want, tc.status, tc.err)
		}
	}
}

func FuzzPasswd(f *testing.F) {
	f.Add(testPasswd, testGroup)
	f.Add("a:b:c\n::::::\n", ":::\n")
	f.Fuzz(func(t *testing.T, passwd, group string) {
		users, err := readPasswd(strings.NewReader(passwd))
		if err != nil {
			return
		}
		for _, u := range users {
			if u.name == "" {
				t.Fatal("an entry without a name")
			}
		}
		groups, _ := readGroup(strings.NewReader(group))
		for _, g := range groups {
			if g.name == "" {
				t.Fatal("a group without a name")
			}
		}
	})
}
