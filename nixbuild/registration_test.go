package nixbuild

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dumpRegistration asks nix-store for the closure, then dumps exactly that
// (a stand-in nix-store records what it was asked).
func TestDumpRegistration(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "nix-store")
	script := `#!/bin/sh
case "$1" in
--query) echo /nix/store/aaa-dep; echo "$3" ;;
--dump-db) shift; echo "dumped: $*" ;;
*) echo "unexpected $*" >&2; exit 1 ;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "registration")
	if err := DumpRegistration(context.Background(), fake, "/nix/store/bbb-system", out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if got := strings.TrimSpace(string(b)); got != "dumped: /nix/store/aaa-dep /nix/store/bbb-system" {
		t.Errorf("registration %q", got)
	}
	os.WriteFile(fake, []byte("#!/bin/sh\necho 'error: path is not valid' >&2; exit 1\n"), 0o755)
	if err := DumpRegistration(context.Background(), fake, "/nix/store/bbb-system", out); err == nil || !strings.Contains(err.Error(), "path is not valid") {
		t.Errorf("a failing nix-store: %v", err)
	}
}
