package launcher

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/config"
)

// A newline in an installable's name must not turn into a command of the
// pasted script, in a comment or anywhere else.
func TestDryRunInstallableScriptIsInert(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	target := ".#vm\ntouch " + pwned + "\n#'\"$(touch " + pwned + ")`touch " + pwned + "`"
	var out bytes.Buffer
	if err := printNixBuild(&config.Config{Target: target, Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(out.String(), "\n"); !strings.HasPrefix(lines[1], `# sonix-run --dry-run: ".#vm\ntouch `) {
		t.Errorf("the comment does not show the target escaped: %q", lines[1])
	}
	// Run it with a nix that only records its arguments.
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "nix"), []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$NIXARGS\"\n"), 0o755)
	cmd := exec.Command("/bin/sh", "-c", out.String())
	cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin", "NIXARGS="+filepath.Join(dir, "args"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the script failed: %v\n%s", err, b)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("running the script ran a command from the target's name")
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if !strings.Contains(string(args), "touch "+pwned) {
		t.Errorf("nix did not get the target as one argument: %q", args)
	}
}
