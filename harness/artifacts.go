package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/owndir"
	"github.com/sonix-run/sonix-run/internal/shell"
	"github.com/sonix-run/sonix-run/rundir"
)

// ArtifactsEnv names the variable that says where failed tests leave their
// artifacts: $SONIX_ARTIFACTS/<test name>/ (see the package doc).
const ArtifactsEnv = "SONIX_ARTIFACTS"

// WriteArtifacts writes what the harness knows of vm into dir:
// NAME.console.log, NAME.commands.log and NAME.reproduce.sh. dir is made if
// missing (mode 0700); one that exists must be the user's own, and not
// writable by others. The files are new (never written through a link or
// over a file): where a name is taken, NAME.2.console.log, ... are used.
// StartT does this by itself when its test fails; a VM from Start can be
// written out with it too.
func (vm *VM) WriteArtifacts(dir string) error {
	m := vm.m
	ended := "still running"
	select {
	case <-m.inst.Done():
		ended = "powered off cleanly"
		if err := m.inst.Wait(); errors.Is(err, errClosed) {
			ended = "stopped by Close (the end of the test)"
		} else if err != nil {
			ended = err.Error()
		}
	default:
	}
	if err := ensureOwnDir(dir, "the artifacts' directory", "choose another"); err != nil {
		return err
	}
	return writeArtifacts(dir, m.cfg, m.console, m.log, vm.Command(), ended)
}

// The artifacts' files, each with its mode.
var artifactFiles = []struct {
	suffix string
	mode   fs.FileMode
}{
	{".console.log", 0o600},
	{".commands.log", 0o600},
	{".reproduce.sh", 0o700},
}

// writeArtifacts writes one VM's files into dir, an own directory; it
// also serves a VM that failed to start (no hypervisor command then).
func writeArtifacts(dir string, cfg config.Config, c *console, log *commandLog, hypervisor, ended string) error {
	files, err := createArtifactFiles(dir, artifactStem(cfg.Name))
	if err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	var cmds bytes.Buffer
	fmt.Fprintf(&cmds, "VM %s, booting %s, started %s\nhow it ended: %s\n\n", cfg.Name, cfg.Target, c.begin.Format(time.RFC3339), ended)
	log.writeTo(&cmds)
	var sh bytes.Buffer
	fmt.Fprintf(&sh, "#!/bin/sh\n# Boots VM %s as the test did; `sonix-run exec %s -- COMMAND` reaches it.\n", cfg.Name, cfg.Name)
	if len(cfg.VLANs) > 0 {
		fmt.Fprintf(&sh, "# Start the test's other VMs too (their NAME.reproduce.sh): VMs on the same --vlan share one LAN.\n")
	}
	if cfg.Workdir != "" {
		fmt.Fprintf(&sh, "cd %s\n", shell.Quote(cfg.Workdir))
	}
	fmt.Fprintf(&sh, "exec %s\n", shell.Join(append([]string{"sonix-run"}, cfg.Args()...)))
	if hypervisor != "" {
		// A comment line by line: a newline in an argument must not end it.
		fmt.Fprintf(&sh, "\n# The hypervisor's command line in that run (its sockets were in the run's directory):\n%s\n", shell.Comment(hypervisor))
	}
	var errs []error
	con := bufio.NewWriter(files[0])
	if err := c.writeTo(con); err != nil {
		errs = append(errs, err)
	} else if err := con.Flush(); err != nil {
		errs = append(errs, err)
	}
	if _, err := files[1].Write(cmds.Bytes()); err != nil {
		errs = append(errs, err)
	}
	if _, err := files[2].Write(sh.Bytes()); err != nil {
		errs = append(errs, err)
	}
	for _, f := range files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	return nil
}

// artifactStem is the start of a VM's artifacts' names: its name, or, for
// a name that is no VM name (a VM that failed to start for it), a
// sanitised one that cannot leave the directory.
func artifactStem(name string) string {
	if rundir.CheckName(name) == nil {
		return name
	}
	return sanitizeName(name, 150)
}

// createArtifactFiles creates the artifacts' files of stem in dir, all new
// (O_EXCL, O_NOFOLLOW: never through a link, never over a file) and with
// their modes whatever the umask. Where a name is taken, the next free of
// stem.2, stem.3, ... is used for all three.
func createArtifactFiles(dir, stem string) ([]*os.File, error) {
	for i := 1; i <= 1000; i++ {
		s := stem
		if i > 1 {
			s += "." + strconv.Itoa(i)
		}
		files, err := createAll(dir, s)
		if err == nil {
			return files, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%s.console.log and 999 numbered variants exist already in %s", stem, dir)
}

// createAll creates the files of stem, or none of them.
func createAll(dir, stem string) ([]*os.File, error) {
	var files []*os.File
	for _, a := range artifactFiles {
		f, err := owndir.Create(dir, stem+a.suffix, a.mode)
		if err == nil {
			if err = f.Chmod(a.mode); err != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}
		if err != nil {
			for _, g := range files { // ours, new and empty
				g.Close()
				os.Remove(g.Name())
			}
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// testArtifacts is the artifacts directory of one test, made when the
// first of its VMs needs it.
type testArtifacts struct {
	mu   sync.Mutex
	made bool
	dir  string
	err  error
}

var artifactsByTest sync.Map // testing.TB -> *testArtifacts

// artifactsFor returns t's record. The first call registers its removal
// as a cleanup, which runs after those of the VMs StartT registers later.
func artifactsFor(t testing.TB) *testArtifacts {
	a, loaded := artifactsByTest.LoadOrStore(t, &testArtifacts{})
	if !loaded {
		t.Cleanup(func() { artifactsByTest.Delete(t) })
	}
	return a.(*testArtifacts)
}

// directory makes the test's directory on first use; first says whether
// this call made it.
func (a *testArtifacts) directory(test string) (dir string, first bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.made {
		return a.dir, false, a.err
	}
	a.made = true
	a.dir, a.err = makeArtifactsDir(os.Getenv(ArtifactsEnv), test, time.Now())
	return a.dir, true, a.err
}

// makeArtifactsDir makes a new directory for test's artifacts (mode 0700)
// under base, $SONIX_ARTIFACTS, or, for base "", under the user's private
// directory in the temporary directory, with the time and process in its
// name. An existing directory (or anything else at its name) is never
// used: the next free of NAME.2, NAME.3, ... is taken.
func makeArtifactsDir(base, test string, now time.Time) (string, error) {
	name := sanitizeName(test, 150)
	if base == "" {
		var err error
		if base, err = privateArtifactsBase(); err != nil {
			return "", fmt.Errorf("artifacts: %w (set %s to a directory of your own)", err, ArtifactsEnv)
		}
		name += "-" + now.Format("20060102-150405") + "-" + strconv.Itoa(os.Getpid())
	} else if err := ensureOwnDir(base, "$"+ArtifactsEnv, "point "+ArtifactsEnv+" at another, or unset it for a private one under "+os.TempDir()); err != nil {
		return "", err
	}
	for i := 1; i <= 1000; i++ {
		dir := filepath.Join(base, name)
		if i > 1 {
			dir += "." + strconv.Itoa(i)
		}
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			// Ours, in a directory no one else may write: its mode is
			// made exact (the umask may have taken bits), then checked.
			if err = os.Chmod(dir, 0o700); err == nil {
				err = owndir.Check(dir, owndir.Private)
			}
			if err != nil {
				return "", fmt.Errorf("artifacts: %w", err)
			}
			return dir, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("artifacts: %w (set %s to a writable directory of your own)", err, ArtifactsEnv)
		}
	}
	return "", fmt.Errorf("artifacts: %s and 999 numbered variants exist already in %s; clean it up", name, base)
}

// privateArtifactsBase is where artifacts go without $SONIX_ARTIFACTS:
// $TMPDIR/sonix-run-UID/artifacts, made if missing, private to the user
// (0700, owned by them; one that is not is refused, never used).
func privateArtifactsBase() (string, error) {
	base := owndir.TempBase()
	if err := owndir.Ensure(base, owndir.Private); err != nil {
		return "", err
	}
	dir := filepath.Join(base, "artifacts")
	if err := owndir.Ensure(dir, owndir.Private); err != nil {
		return "", err
	}
	return dir, nil
}

// ensureOwnDir makes dir, a directory the user chose (what names it in
// messages, hint says what else to do), if it is missing (mode 0700, its
// missing parents 0755), and checks that it is theirs and that no one else
// may write it: another user could otherwise plant links or swap files
// there.
func ensureOwnDir(dir, what, hint string) error {
	if parent := filepath.Dir(dir); parent != dir {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("artifacts: making %s (%s): %w", what, dir, err)
		}
	}
	err := owndir.Ensure(dir, owndir.Cache)
	var ue *owndir.UnsafeError
	switch {
	case errors.As(err, &ue):
		return fmt.Errorf("artifacts: refusing %s (%s): it %s, so another user could plant links or swap files in it; "+
			"use a directory of your own that only you can write (%s)", what, dir, ue.Reason, hint)
	case err != nil:
		return fmt.Errorf("artifacts: making %s (%s): %w", what, dir, err)
	}
	return nil
}
