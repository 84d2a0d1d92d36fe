package harness

import (
	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/internal/shell"
)

// reproduceLine is the shell command that boots what cfg describes: the
// CLI's flags for it (config.Config.Args, the inverse of the CLI's
// parser), run where --cwd shares from.
func reproduceLine(cfg config.Config) string {
	line := shell.Join(append([]string{"sonix-run"}, cfg.Args()...))
	if cfg.Workdir != "" {
		line = "cd " + shell.Quote(cfg.Workdir) + " && " + line
	}
	return line
}
