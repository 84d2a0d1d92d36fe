package harness

import (
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

	"github.com/sonix-run/sonix-run/launcher"
)

// ArtifactsEnv names the variable that says where failed tests leave their
// artifacts: $SONIX_ARTIFACTS/<test name>/ (see the package doc).
const ArtifactsEnv = "SONIX_ARTIFACTS"

// WriteArtifacts writes what the harness knows of vm into dir (made if
// missing): NAME.console.log, NAME.commands.log and NAME.reproduce.sh.
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
	return writeArtifacts(dir, m.cfg, m.console, m.log, vm.Command(), ended)
}

// writeArtifacts writes one VM's files; it also serves a VM that failed to
// start (no hypervisor command then).
func writeArtifacts(dir string, cfg launcher.Config, c *console, log *commandLog, hypervisor, ended string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	base := filepath.Join(dir, cfg.Name)
	var con bytes.Buffer
	c.writeTo(&con)
	var cmds bytes.Buffer
	fmt.Fprintf(&cmds, "VM %s, booting %s, started %s\nhow it ended: %s\n\n", cfg.Name, cfg.Target, c.begin.Format(time.RFC3339), ended)
	log.writeTo(&cmds)
	var sh bytes.Buffer
	fmt.Fprintf(&sh, "#!/bin/sh\n# Boots VM %s as the test did; `sonix-run exec %s -- COMMAND` reaches it.\n", cfg.Name, cfg.Name)
	if len(cfg.VLANs) > 0 {
		fmt.Fprintf(&sh, "# Start the test's other VMs too (their NAME.reproduce.sh): VMs on the same --vlan share one LAN.\n")
	}
	fmt.Fprintf(&sh, "exec %s\n", reproduceLine(cfg))
	if hypervisor != "" {
		fmt.Fprintf(&sh, "\n# The hypervisor's command line in that run (its sockets were in the run's directory):\n# %s\n", hypervisor)
	}
	return errors.Join(
		os.WriteFile(base+".console.log", con.Bytes(), 0o644),
		os.WriteFile(base+".commands.log", cmds.Bytes(), 0o644),
		os.WriteFile(base+".reproduce.sh", sh.Bytes(), 0o755),
	)
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

// makeArtifactsDir makes a new directory for test's artifacts under base,
// or, for base "", under the temporary directory with the time and process
// in its name. An existing directory is never reused: the next free of
// NAME.2, NAME.3, ... is taken.
func makeArtifactsDir(base, test string, now time.Time) (string, error) {
	name := sanitizeName(test, 150)
	if base == "" {
		base = filepath.Join(os.TempDir(), "sonix-artifacts")
		name += "-" + now.Format("20060102-150405") + "-" + strconv.Itoa(os.Getpid())
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("artifacts: %w (set %s to a writable directory)", err, ArtifactsEnv)
	}
	for i := 1; i <= 1000; i++ {
		dir := filepath.Join(base, name)
		if i > 1 {
			dir += "." + strconv.Itoa(i)
		}
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("artifacts: %w (set %s to a writable directory)", err, ArtifactsEnv)
		}
	}
	return "", fmt.Errorf("artifacts: %s and 999 numbered variants exist already in %s; clean it up", name, base)
}
