package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

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

// runDirBases are where run directories go, in order of preference:
// $XDG_RUNTIME_DIR (private to the user, on tmpfs), then a private
// directory in the temporary directory.
func runDirBases() []string {
	var bases []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			bases = append(bases, d)
		}
	}
	return append(bases, filepath.Join(os.TempDir(), fmt.Sprintf("sonix-run-%d", os.Geteuid())))
}

// runDirFor is the run directory of a VM named name: under the first base
// whose socket paths fit.
func runDirFor(name string) (string, error) {
	bases := runDirBases()
	for _, b := range bases {
		dir := filepath.Join(b, runDirPrefix+name)
		if len(dir) <= maxSocketPath {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no place for the run directory of %q: Unix socket paths are limited to 107 bytes and %s is too long (set $XDG_RUNTIME_DIR or $TMPDIR to a shorter directory, or use a shorter --name)", name, filepath.Join(bases[len(bases)-1], runDirPrefix+name))
}

// createRunDir makes the run directory of name, private, with its owner
// file. A directory of that name whose owner is dead is removed first; a
// live one is an error.
func createRunDir(name, target, workdir string) (string, error) {
	dir, err := runDirFor(name)
	if err != nil {
		return "", &Error{Reason: BadInput, Err: err}
	}
	base := filepath.Dir(dir)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fail(Failure, "creating %s: %w", base, err)
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
	b, _ := json.Marshal(o)
	if err := os.WriteFile(filepath.Join(tmp, ownerFile), b, 0o600); err != nil {
		os.RemoveAll(tmp)
		return "", fail(Failure, "writing the run directory's owner file: %w", err)
	}
	for attempt := 0; ; attempt++ {
		err := os.Rename(tmp, dir)
		if err == nil {
			return dir, nil
		}
		if attempt > 0 || !(errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY)) {
			os.RemoveAll(tmp)
			return "", fail(Failure, "creating the run directory: %w", err)
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

func readOwner(dir string) (Owner, error) {
	var o Owner
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
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
// too: alive tells).
func runDirs() []Owner {
	var out []Owner
	for _, b := range runDirBases() {
		entries, _ := os.ReadDir(b)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), creatingPrefix) {
				// Left by a run killed while creating its directory.
				if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
					os.RemoveAll(filepath.Join(b, e.Name()))
				}
				continue
			}
			if !e.IsDir() || !strings.HasPrefix(e.Name(), runDirPrefix) {
				continue
			}
			if o, err := readOwner(filepath.Join(b, e.Name())); err == nil {
				out = append(out, o)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// reapStale removes the run directories of runs that died without
// cleaning up (SIGKILL, a crash, a power cut).
func reapStale() { List() }

// List returns this user's running VMs. On the way it removes the run
// directories of runs that died without cleaning up (SIGKILL, a crash, a
// power cut); only directories with an owner file are touched, so one
// being created right now (none yet) is left alone.
func List() []Owner {
	var out []Owner
	for _, o := range runDirs() {
		if o.alive() {
			out = append(out, o)
		} else {
			removeRunDir(o.Dir)
		}
	}
	return out
}

// find returns the run directory of the running VM called name.
func find(name string) (Owner, error) {
	if err := CheckName(name); err != nil {
		return Owner{}, err
	}
	for _, o := range List() {
		if o.Name == name {
			return o, nil
		}
	}
	var names []string
	for _, o := range List() {
		names = append(names, o.Name)
	}
	return Owner{}, &Error{Reason: BadInput, Err: fmt.Errorf("no VM named %q is running (running: %s)", name, orNone(names))}
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
