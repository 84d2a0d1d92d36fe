package nixbuild

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sonix-run/sonix-run/internal/proc"
)

// DumpRegistration writes to out the registration of toplevel's closure
// in the host's Nix database (nix-store is the host's nix-store): the
// guest loads it so that Nix inside knows the store paths it sees. It runs
// nix-store -qR, then --dump-db of what that lists.
func DumpRegistration(ctx context.Context, nixStore, toplevel, out string) error {
	var closure, stderr bytes.Buffer
	q := exec.Command(nixStore, "--query", "--requisites", toplevel)
	q.Stdout, q.Stderr = &closure, &stderr
	if err := proc.Run(ctx, q, time.Second); err != nil {
		return fmt.Errorf("nix-store --query --requisites %s: %v: %s", toplevel, err, strings.TrimSpace(stderr.String()))
	}
	paths := strings.Fields(closure.String())
	if len(paths) == 0 {
		return fmt.Errorf("nix-store --query --requisites %s listed nothing", toplevel)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	stderr.Reset()
	d := exec.Command(nixStore, append([]string{"--dump-db"}, paths...)...)
	d.Stdout, d.Stderr = f, &stderr
	err = proc.Run(ctx, d, time.Second)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("nix-store --dump-db: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
