package guest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/sonix-run/sonix-run/agent/wire"
)

// account is who a command runs as.
type account struct {
	name       string // "" for a uid without a passwd entry
	uid, gid   uint32
	groups     []uint32 // supplementary groups, the primary one included
	home       string
	shell      string
	setIDs     bool // switch to uid, gid and groups (a user was asked for)
	passwdPath string
}

type passwdEntry struct {
	name       string
	uid, gid   uint32
	home, sh   string
	groupNames []string
}

// readPasswd reads passwd(5) entries; malformed lines are skipped, as the C
// library does.
func readPasswd(r io.Reader) ([]passwdEntry, error) {
	var out []passwdEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) != 7 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid), home: f[5], sh: f[6]})
	}
	return out, sc.Err()
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// readGroup reads group(5) entries, skipping malformed lines.
func readGroup(r io.Reader) ([]groupEntry, error) {
	var out []groupEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) != 4 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		var members []string
		if f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		out = append(out, groupEntry{name: f[0], gid: uint32(gid), members: members})
	}
	return out, sc.Err()
}

func readFileEntries[T any](path string, parse func(io.Reader) ([]T, error)) ([]T, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

// resolveUser finds who a command runs as: spec from the request (nil for
// the agent's own user, selfUID), names looked up in passwdPath and
// groupPath. A uid without a passwd entry gets its own number as gid, no
// supplementary groups and / as home. Naming a group gives exactly that
// group; otherwise the user's groups are its primary group and every group
// that lists it.
func resolveUser(spec *wire.UserSpec, selfUID uint32, passwdPath, groupPath string) (*account, error) {
	users, err := readFileEntries(passwdPath, readPasswd)
	if err != nil {
		return nil, err
	}
	if spec == nil {
		a := &account{uid: selfUID, home: "/"}
		if selfUID == 0 {
			a.home = "/root"
		}
		for _, u := range users {
			if u.uid == selfUID {
				a.name, a.gid, a.home, a.shell = u.name, u.gid, u.home, u.sh
				break
			}
		}
		return a, nil
	}
	a := &account{setIDs: true}
	var found *passwdEntry
	for i := range users {
		u := &users[i]
		if spec.NumericUID && u.uid == spec.UID || !spec.NumericUID && u.name == spec.Name {
			found = u
			break
		}
	}
	switch {
	case found != nil:
		a.name, a.uid, a.gid, a.home, a.shell = found.name, found.uid, found.gid, found.home, found.sh
	case spec.NumericUID:
		a.uid, a.gid, a.home = spec.UID, spec.UID, "/"
	default:
		return nil, fmt.Errorf("user %q: not found in %s", spec.Name, passwdPath)
	}
	if a.home == "" {
		a.home = "/"
	}
	groups, err := readFileEntries(groupPath, readGroup)
	if err != nil {
		return nil, err
	}
	if spec.HasGroup {
		if spec.NumericGID {
			a.gid = spec.GID
		} else {
			ok := false
			for _, g := range groups {
				if g.name == spec.Group {
					a.gid, ok = g.gid, true
					break
				}
			}
			if !ok {
				return nil, fmt.Errorf("group %q: not found in %s", spec.Group, groupPath)
			}
		}
		a.groups = []uint32{a.gid}
		return a, nil
	}
	a.groups = []uint32{a.gid}
	if a.name != "" {
		for _, g := range groups {
			for _, m := range g.members {
				if m == a.name && g.gid != a.gid {
					a.groups = append(a.groups, g.gid)
					break
				}
			}
		}
	}
	return a, nil
}

// commandEnv is a command's environment: a clean base (PATH, HOME, USER,
// LOGNAME, SHELL when known, TERM on a terminal), then the request's
// entries, a later entry replacing an earlier one of the same name.
func commandEnv(path string, a *account, tty bool, extra []string) []string {
	env := []string{"PATH=" + path, "HOME=" + a.home}
	if a.name != "" {
		env = append(env, "USER="+a.name, "LOGNAME="+a.name)
	}
	if a.shell != "" {
		env = append(env, "SHELL="+a.shell)
	}
	if tty {
		env = append(env, "TERM=xterm")
	}
	index := map[string]int{}
	var out []string
	for _, kv := range append(env, extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// envValue is the value of key in env.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// lookPath finds the program argv[0] names: a name with a slash is a path
// (relative to dir), any other is searched on path. status is the shell's
// status when it cannot be run: 127 not found, 126 not executable.
func lookPath(name, path, dir string) (prog string, status int, err error) {
	check := func(p string) (int, error) {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			return 127, err
		case fi.IsDir():
			return 126, fmt.Errorf("%s is a directory", p)
		case fi.Mode()&0o111 == 0:
			return 126, fmt.Errorf("%s is not executable", p)
		}
		return 0, nil
	}
	if strings.Contains(name, "/") {
		prog = name
		if !strings.HasPrefix(name, "/") {
			prog = dir + "/" + name
		}
		if status, err := check(prog); err != nil {
			return "", status, fmt.Errorf("cannot run %q: %v", name, err)
		}
		return prog, 0, nil
	}
	status = 127
	var firstErr error
	for _, d := range strings.Split(path, ":") {
		if d == "" || !strings.HasPrefix(d, "/") {
			continue // relative PATH entries would depend on dir; not searched
		}
		p := d + "/" + name
		st, err := check(p)
		if err == nil {
			return p, 0, nil
		}
		if st == 126 && firstErr == nil {
			status, firstErr = 126, err
		}
	}
	if firstErr != nil {
		return "", status, fmt.Errorf("cannot run %q: %v", name, firstErr)
	}
	return "", 127, fmt.Errorf("cannot run %q: not found on the PATH (%s)", name, path)
}
