// Package rundir is the run registry: where each running VM's run
// directory is, the name of every file in it, who runs it, and the removal
// of those whose run died. It is the one place that knows where sonix-run
// keeps a run's sockets, so that `sonix-run exec NAME` finds what
// `sonix-run --name NAME` made, and the one that checks, before anything
// is read or dialled there, that no other user could have made or swapped
// it.
package rundir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sonix-run/sonix-run/internal/owndir"
)

// A run directory holds one run's sockets and its owner file; its name is
// "sonix-run-" plus the VM's name, so `sonix-run exec NAME` finds it. It is
// private (0700) and removed at the end of the run; a run killed with
// SIGKILL leaves it behind, and the next Reap removes it.
const runDirPrefix = "sonix-run-"

// Errors of the registry, for errors.Is; the errors returned say more.
var (
	// ErrNotRunning: no VM of that name is running.
	ErrNotRunning = errors.New("no VM of that name is running")
	// ErrRunning: a VM of that name is already running.
	ErrRunning = errors.New("a VM of that name is already running")
	// ErrInTheWay: something that is not a run directory of ours has the
	// name a run directory would take.
	ErrInTheWay = errors.New("the run directory's name is taken")
	// ErrBadName: not a VM name.
	ErrBadName = errors.New("not a VM name")
	// ErrNoPlace: no private place for run directories (a base another
	// user could reach, or socket paths too long).
	ErrNoPlace = errors.New("no place for the run directory")
)

// The files of a run directory: this is the one place that names them.

// ControlSocket is the run's control socket (package control).
func ControlSocket(dir string) string { return filepath.Join(dir, "ctl.sock") }

// QMPSocket is QEMU's monitor.
func QMPSocket(dir string) string { return filepath.Join(dir, "qmp.sock") }

// AgentSocket is the host end of the guest agent's port.
func AgentSocket(dir string) string { return filepath.Join(dir, "agent.sock") }

// MaxShares bounds a VM's virtio-fs shares (ShareSocket's n).
const MaxShares = 100

// ShareSocket is the socket of the virtiofsd serving share n (0 to
// MaxShares-1).
func ShareSocket(dir string, n int) string {
	if n < 0 || n >= MaxShares {
		panic(fmt.Sprintf("rundir: share %d out of range", n))
	}
	return filepath.Join(dir, fmt.Sprintf("fs%d.sock", n))
}

// MetaDir holds what the guest should know about its run (the per-run
// metadata share).
func MetaDir(dir string) string { return filepath.Join(dir, "meta") }

// ProbeImage is the KVM probe's tiny guest.
func ProbeImage(dir string) string { return filepath.Join(dir, "kvm-probe") }

// Stale lists files outside a run directory that what ran in it may leave
// behind when killed (the legacy virtiofsd's lock files); RemoveDead
// removes them with the directory. Registered by those that know.
var stale []func(dir string) []string

// AlsoRemove registers f: for a run directory, the files outside it that
// go with it.
func AlsoRemove(f func(dir string) []string) { stale = append(stale, f) }

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

// CheckName checks a VM name: it names a run directory.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: VM name %q: expected 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrBadName, name)
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

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
	return "", "", fmt.Errorf("%w of %q: Unix socket paths are limited to 107 bytes and %s is too long (set $XDG_RUNTIME_DIR or $TMPDIR to a shorter directory, or use a shorter --name)", ErrNoPlace, name, dir)
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

// Create makes the run directory of the VM name, private, with its owner
// file (target and workdir are what list and exec show and use). A
// directory of that name whose owner is dead is removed first; a live one
// is ErrRunning.
func Create(name, target, workdir string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	p := currentPlaces()
	base, dir, err := p.dirFor(name)
	if err != nil {
		return "", err
	}
	// $XDG_RUNTIME_DIR is checked, never made; the temporary base is made
	// private if missing, and refused if it is not ours alone.
	if err := owndir.Ensure(base, owndir.Private); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoPlace, err)
	}
	// Made complete (owner file inside) under a temporary name, then
	// renamed into place: a run directory never exists without its owner,
	// so two runs racing for one name cannot take each other's for a dead
	// one's, and the loser sees the winner's owner.
	tmp, err := os.MkdirTemp(base, creatingPrefix)
	if err != nil {
		return "", fmt.Errorf("creating the run directory: %w", err)
	}
	start, _ := procStart(os.Getpid())
	o := Owner{Name: name, PID: os.Getpid(), Start: start, Target: target, Started: time.Now().UTC(), Workdir: workdir}
	if err := writeOwner(tmp, o); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("writing the run directory's owner file: %w", err)
	}
	for attempt := 0; ; attempt++ {
		err := os.Rename(tmp, dir)
		if err == nil {
			return dir, nil
		}
		if attempt > 0 || !(errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR)) {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("creating the run directory: %w", err)
		}
		if err := owndir.Check(dir, owndir.Private); err != nil {
			// Not a run directory of ours: left alone.
			os.RemoveAll(tmp)
			return "", fmt.Errorf("%w: %w; or give another --name", ErrInTheWay, err)
		}
		if o, err := readOwner(dir); err != nil || o.Alive() {
			os.RemoveAll(tmp)
			if err != nil {
				return "", fmt.Errorf("%w: the run directory %s is in the way (%v); remove it, or give another --name", ErrInTheWay, dir, err)
			}
			return "", fmt.Errorf("%w: a VM named %q is already running (pid %d, %s); give another --name or stop it with `sonix-run stop %s`", ErrRunning, name, o.PID, o.Target, name)
		}
		if err := Remove(dir); err != nil { // a dead run's
			os.RemoveAll(tmp)
			return "", fmt.Errorf("removing a dead run's directory: %w", err)
		}
	}
}

// creatingPrefix names run directories being made (Create); Reap removes
// those a crash left behind.
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

// Alive says whether the run that wrote o still runs.
func (o Owner) Alive() bool {
	start, err := procStart(o.PID)
	if err != nil {
		return false
	}
	return o.Start == 0 || start == 0 || start == o.Start
}

// Remove removes a run directory and what ran in it may have left outside
// it (AlsoRemove).
func Remove(dir string) error {
	var errs []error
	for _, files := range stale {
		for _, f := range files(dir) {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
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

// Reap returns this user's running VMs, and removes on the way the run
// directories of runs that died without cleaning up (SIGKILL, a crash, a
// power cut); only directories with an owner file are touched, so one
// being created right now (none yet) is left alone. Directories that fail
// the checks are ignored, and notice is one line for stderr naming them
// and saying what to do ("" when there were none).
func Reap() (vms []Owner, notice string) {
	all, refused := runDirs()
	for _, o := range all {
		if o.Alive() {
			vms = append(vms, o)
		} else {
			Remove(o.Dir)
		}
	}
	return vms, refusalsNotice(refused)
}

// Find returns the owner of the running VM called name: its run directory
// is looked for where Create would put it, through checked directories
// only. When it is not there, the error (ErrNotRunning) names the VMs that
// are running and, on the same line, the directories ignored as unsafe.
func Find(name string) (Owner, error) {
	if err := CheckName(name); err != nil {
		return Owner{}, err
	}
	if base, dir, err := currentPlaces().dirFor(name); err == nil {
		if ok, _ := checkBase(base); ok && owndir.Check(dir, owndir.Private) == nil {
			if o, err := readOwner(dir); err == nil && o.Name == name && o.Alive() {
				return o, nil
			}
		}
	}
	vms, notice := Reap()
	var names []string
	for _, o := range vms {
		names = append(names, o.Name)
	}
	running := "none"
	if len(names) > 0 {
		running = strings.Join(names, ", ")
	}
	msg := fmt.Sprintf("no VM named %q is running (running: %s)", name, running)
	if notice != "" {
		msg += "; " + strings.TrimPrefix(notice, "sonix-run: ")
	}
	return Owner{}, &notRunning{msg}
}

type notRunning struct{ msg string }

func (e *notRunning) Error() string   { return e.msg }
func (e *notRunning) Is(t error) bool { return t == ErrNotRunning }

// Notice is a line to say once about where the run directory dir is, when
// that is not where the user would expect ($XDG_RUNTIME_DIR set but
// unusable); "" otherwise.
func Notice(dir string) string {
	if p := currentPlaces(); p.xdgErr != nil && filepath.Dir(dir) == p.temp {
		return strings.Join(strings.Fields(fmt.Sprintf("sonix-run: the run directory is %s, not in $XDG_RUNTIME_DIR: %v", dir, p.xdgErr)), " ")
	}
	return ""
}

// FreeName is base, or base-2, base-3... : the first name no running VM
// has.
func FreeName(base string) string {
	taken := map[string]bool{}
	vms, _ := Reap()
	for _, o := range vms {
		taken[o.Name] = true
	}
	name := base
	for i := 2; taken[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}
