package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/virtiofs"
)

// A run directory holds one run's sockets and its owner file; its name is
// "sonix-run-" plus the VM's name, so `sonix-run exec NAME` finds it. It is
// private (0700) and removed at the end of the run; a run killed with
// SIGKILL leaves it behind, and the next run removes it (reapStale).
const runDirPrefix = "sonix-run-"

// ownerFile records who runs a VM: for list, and to tell a dead run's
// leftovers from a live one.
const ownerFile = "owner.json"

// Owner is what a run directory says about its run.
type Owner struct {
	Name    string    `json:"name"`
	PID     int       `json:"pid"`
	Start   uint64    `json:"start"` // the process's start time, against PID reuse
	Target  string    `json:"target"`
	Started time.Time `json:"started"`
	Workdir string    `json:"workdir,omitempty"` // --cwd: where commands run

	Dir string `json:"-"`
}

// maxSocketPath is the longest Unix socket path (sun_path holds 108 bytes
// with its NUL), less the longest socket name a run directory holds.
const maxSocketPath = 107 - len("/fs99.sock")

// Where run directories are: this is the one place that knows.
//
// A base holds run directories only when Lstat shows a directory of the
// user's with no access for group or others (owndir.Private); so does each
// run directory. Anything else is refused when creating and ignored when
// looking (list, exec, cp, stop, forward), with one line saying so: no
// owner file is read and no socket dialled through a directory another
// user could have made, entered or swapped. The bases:
//
//   - $XDG_RUNTIME_DIR, when it is set and passes the checks: every run
//     directory whose socket paths fit under it is there, and looked for
//     there only;
//   - $TMPDIR/sonix-run-UID (owndir.TempBase, made private if missing):
//     the run directories of names too long for $XDG_RUNTIME_DIR, or all of
//     them when it is unset or unusable.
type runPlaces struct {
	xdg    string // $XDG_RUNTIME_DIR, when set and usable
	xdgErr error  // why a set $XDG_RUNTIME_DIR is not used
	temp   string // owndir.TempBase()
}

func currentPlaces() runPlaces {
	xdg, err := owndir.RuntimeDir()
	return runPlaces{xdg: xdg, xdgErr: err, temp: owndir.TempBase()}
}

// dirFor is the run directory of a VM named name, and its base.
func (p runPlaces) dirFor(name string) (base, dir string, err error) {
	if p.xdg != "" {
		if dir := filepath.Join(p.xdg, runDirPrefix+name); len(dir) <= maxSocketPath {
			return p.xdg, dir, nil
		}
	}
	dir = filepath.Join(p.temp, runDirPrefix+name)
	if len(dir) <= maxSocketPath {
		return p.temp, dir, nil
	}
	return "", "", fmt.Errorf("no place for the run directory of %q: Unix socket paths are limited to 107 bytes and %s is too long (set $XDG_RUNTIME_DIR or $TMPDIR to a shorter directory, or use a shorter --name)", name, dir)
}

// inTemp says whether the temporary base is where dirFor puts a run
// directory called entry: list looks for no other there.
func (p runPlaces) inTemp(entry string) bool {
	return p.xdg == "" || len(filepath.Join(p.xdg, entry)) > maxSocketPath
}

// refusal is a directory ignored as unsafe, for the one line that says so.
type refusal struct {
	what string // "$XDG_RUNTIME_DIR", or "" for a base or run directory
	err  error
}

// refusalsNotice is the one line that says which directories were ignored
// and what to do; "" when none was.
func refusalsNotice(rs []refusal) string {
	if len(rs) == 0 {
		return ""
	}
	parts := make([]string, len(rs))
	for n, r := range rs {
		var ue *owndir.UnsafeError
		if errors.As(r.err, &ue) {
			parts[n] = ue.Dir + ", which " + ue.Reason
		} else {
			parts[n] = r.err.Error()
		}
		if r.what != "" && !strings.Contains(parts[n], r.what) {
			parts[n] = r.what + " " + parts[n]
		}
	}
	s := "sonix-run: ignored " + strings.Join(parts, "; and ") +
		": a directory another user could have made, entered or swapped is never trusted with VMs' sockets; remove it, or set $XDG_RUNTIME_DIR or $TMPDIR to a private directory of yours"
	return strings.Join(strings.Fields(s), " ") // one line, whatever an error holds
}

// checkBase checks a base before anything in it is read or dialled; a
// missing one holds nothing (ok false, no refusal).
func checkBase(base string) (ok bool, r *refusal) {
	err := owndir.Check(base, owndir.Private)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, &refusal{err: err}
}

// createRunDir makes the run directory of name, private, with its owner
// file. A directory of that name whose owner is dead is removed first; a
// live one is an error.
func createRunDir(name, target, workdir string) (string, error) {
	p := currentPlaces()
	base, dir, err := p.dirFor(name)
	if err != nil {
		return "", &Error{Reason: BadInput, Err: err}
	}
	// $XDG_RUNTIME_DIR is checked, never made; the temporary base is made
	// private if missing, and refused if it is not ours alone.
	if err := owndir.Ensure(base, owndir.Private); err != nil {
		return "", fail(Failure, "no place for the run directory: %w", err)
	}
	// Made complete (owner file inside) under a temporary name, then
	// renamed into place: a run directory never exists without its owner,
	// so two runs racing for one name cannot take each other's for a dead
	// one's, and the loser sees the winner's owner.
	tmp, err := os.MkdirTemp(base, creatingPrefix)
	if err != nil {
		return "", fail(Failure, "creating the run directory: %w", err)
	}
	start, _ := procStart(os.Getpid())
	o := Owner{Name: name, PID: os.Getpid(), Start: start, Target: target, Started: time.Now().UTC(), Workdir: workdir}
	if err := writeOwner(tmp, o); err != nil {
		os.RemoveAll(tmp)
		return "", fail(Failure, "writing the run directory's owner file: %w", err)
	}
	for attempt := 0; ; attempt++ {
		err := os.Rename(tmp, dir)
		if err == nil {
			return dir, nil
		}
		if attempt > 0 || !(errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR)) {
			os.RemoveAll(tmp)
			return "", fail(Failure, "creating the run directory: %w", err)
		}
		if err := owndir.Check(dir, owndir.Private); err != nil {
			// Not a run directory of ours: left alone.
			os.RemoveAll(tmp)
			return "", &Error{Reason: BadInput, Err: fmt.Errorf("%w; or give another --name", err)}
		}
		if o, err := readOwner(dir); err != nil || o.alive() {
			os.RemoveAll(tmp)
			if err != nil {
				return "", &Error{Reason: BadInput, Err: fmt.Errorf("the run directory %s is in the way (%v); remove it, or give another --name", dir, err)}
			}
			return "", &Error{Reason: BadInput, Err: fmt.Errorf("a VM named %q is already running (pid %d, %s); give another --name or stop it with `sonix-run stop %s`", name, o.PID, o.Target, name)}
		}
		if err := removeRunDir(dir); err != nil { // a dead run's
			os.RemoveAll(tmp)
			return "", fail(Failure, "removing a dead run's directory: %w", err)
		}
	}
}

// creatingPrefix names run directories being made (createRunDir); List
// removes those a crash left behind.
const creatingPrefix = ".sonix-run-creating-"

// maxOwnerFile bounds an owner file.
const maxOwnerFile = 64 << 10

// writeOwner writes o's owner file into dir, a new private directory,
// without following a link.
func writeOwner(dir string, o Owner) error {
	b, _ := json.Marshal(o)
	f, err := owndir.Create(dir, ownerFile, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readOwner reads the owner file of dir, a checked run directory, without
// following a link.
func readOwner(dir string) (Owner, error) {
	var o Owner
	b, err := owndir.ReadFile(dir, ownerFile, maxOwnerFile)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(b, &o); err != nil || o.PID <= 0 {
		return o, fmt.Errorf("%s: not an owner file", filepath.Join(dir, ownerFile))
	}
	o.Dir = dir
	return o, nil
}

// alive says whether the run that wrote o still runs.
func (o Owner) alive() bool {
	start, err := procStart(o.PID)
	if err != nil {
		return false
	}
	return o.Start == 0 || start == 0 || start == o.Start
}

// removeRunDir removes a run directory and what its virtiofsd daemons may
// have left outside it.
func removeRunDir(dir string) error {
	var errs []error
	for _, f := range virtiofs.StaleFiles(dir) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// runDirs lists this user's run directories with their owners (dead ones
// too: alive tells), and the directories ignored as unsafe.
func runDirs() ([]Owner, []refusal) {
	p := currentPlaces()
	var out []Owner
	var refused []refusal
	if p.xdgErr != nil && !errors.Is(p.xdgErr, fs.ErrNotExist) {
		refused = append(refused, refusal{what: "$XDG_RUNTIME_DIR", err: p.xdgErr})
	}
	scan := func(base string, want func(entry string) bool) {
		if ok, r := checkBase(base); !ok {
			if r != nil {
				refused = append(refused, *r)
			}
			return
		}
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), creatingPrefix) {
				// Left by a run killed while creating its directory.
				if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
					os.RemoveAll(filepath.Join(base, e.Name()))
				}
				continue
			}
			if !strings.HasPrefix(e.Name(), runDirPrefix) || !want(e.Name()) {
				continue
			}
			dir := filepath.Join(base, e.Name())
			if err := owndir.Check(dir, owndir.Private); err != nil {
				if !errors.Is(err, fs.ErrNotExist) { // not gone meanwhile
					refused = append(refused, refusal{err: err})
				}
				continue
			}
			// An owner file names its directory's VM, as createRunDir writes it.
			if o, err := readOwner(dir); err == nil && runDirPrefix+o.Name == e.Name() {
				out = append(out, o)
			}
		}
	}
	if p.xdg != "" {
		scan(p.xdg, func(string) bool { return true })
	}
	scan(p.temp, p.inTemp)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, refused
}

// reapStale removes the run directories of runs that died without
// cleaning up (SIGKILL, a crash, a power cut).
func reapStale() { List() }

// List returns this user's running VMs. On the way it removes the run
// directories of runs that died without cleaning up (SIGKILL, a crash, a
// power cut); only directories with an owner file are touched, so one
// being created right now (none yet) is left alone. Directories that fail
// the checks are ignored; Running also says which.
func List() []Owner {
	vms, _ := Running()
	return vms
}

// Running is List, and notice: one line for stderr naming the directories
// ignored because another user could have made, entered or swapped them
// (and what to do), "" when there were none.
func Running() (vms []Owner, notice string) {
	all, refused := runDirs()
	for _, o := range all {
		if o.alive() {
			vms = append(vms, o)
		} else {
			removeRunDir(o.Dir)
		}
	}
	return vms, refusalsNotice(refused)
}

// find returns the owner of the running VM called name: its run directory
// is looked for where createRunDir would put it, through checked
// directories only. When it is not there, the error names the VMs that are
// running and, on the same line, the directories ignored as unsafe.
func find(name string) (Owner, error) {
	if err := CheckName(name); err != nil {
		return Owner{}, err
	}
	if base, dir, err := currentPlaces().dirFor(name); err == nil {
		if ok, _ := checkBase(base); ok && owndir.Check(dir, owndir.Private) == nil {
			if o, err := readOwner(dir); err == nil && o.Name == name && o.alive() {
				return o, nil
			}
		}
	}
	vms, notice := Running()
	var names []string
	for _, o := range vms {
		names = append(names, o.Name)
	}
	msg := fmt.Sprintf("no VM named %q is running (running: %s)", name, orNone(names))
	if notice != "" {
		msg += "; " + strings.TrimPrefix(notice, "sonix-run: ")
	}
	return Owner{}, &Error{Reason: BadInput, Err: errors.New(msg)}
}

// placeNotices are the lines a run says once about where it keeps its
// files, when that is not where the user would expect: $XDG_RUNTIME_DIR
// set but unusable, and the cache out of its place or not kept at all.
func placeNotices(runDir string) []string {
	var out []string
	if p := currentPlaces(); p.xdgErr != nil && filepath.Dir(runDir) == p.temp {
		out = append(out, strings.Join(strings.Fields(fmt.Sprintf("sonix-run: the run directory is %s, not in $XDG_RUNTIME_DIR: %v", runDir, p.xdgErr)), " "))
	}
	if n := owndir.CacheNotice(); n != "" {
		out = append(out, "sonix-run: "+n)
	}
	return out
}

// defaultName names a VM after its system (the toplevel's name without its
// hash), numbered when that name is taken by a running VM.
func defaultName(toplevel string) string {
	base := defaultNameBase(toplevel)
	taken := map[string]bool{}
	for _, o := range List() {
		taken[o.Name] = true
	}
	name := base
	for i := 2; taken[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

// defaultNameBase is a VM name made from a system's store path.
func defaultNameBase(toplevel string) string {
	base := filepath.Base(toplevel)
	if i := strings.IndexByte(base, '-'); i == 32 {
		base = base[i+1:]
	}
	base = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, base)
	base = strings.TrimLeft(base, "-_.")
	if len(base) > 48 {
		base = base[:48]
	}
	if base == "" {
		base = "vm"
	}
	return base
}
