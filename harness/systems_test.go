package harness

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/sonix-run/sonix-run/config"
)

// systemsT records what System says through Fatalf and ends the goroutine
// there, as testing.T does.
type systemsT struct {
	testing.TB
	mu     sync.Mutex
	fatal  string
	helper int
}

func (s *systemsT) Helper() { s.mu.Lock(); s.helper++; s.mu.Unlock() }
func (s *systemsT) Fatalf(format string, args ...any) {
	s.mu.Lock()
	s.fatal = fmt.Sprintf(format, args...)
	s.mu.Unlock()
	runtime.Goexit()
}

// callSystem runs System in a goroutine of its own (Fatalf ends it) and
// returns what it returned, or its Fatalf message.
func callSystem(t *testing.T, name string, fallback func(testing.TB) config.Config) (config.Config, string) {
	t.Helper()
	st := &systemsT{TB: t}
	var cfg config.Config
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg = System(st, name, fallback)
	}()
	<-done
	st.mu.Lock()
	defer st.mu.Unlock()
	return cfg, st.fatal
}

func TestSystemFromEnvironment(t *testing.T) {
	t.Setenv(SystemsEnv, `{"server":"/nix/store/aaaa-nixos-system-server","client":{"target":"/nix/store/bbbb-sys/boot.json","store":"/srv/store","modules":"/srv/mods"}}`)
	fallbackCalled := false
	fallback := func(testing.TB) config.Config { fallbackCalled = true; return config.Config{Target: "fallback"} }

	cfg, fatal := callSystem(t, "server", fallback)
	if fatal != "" || cfg.Target != "/nix/store/aaaa-nixos-system-server" || cfg.StoreDir != "" || cfg.ModulesDir != "" {
		t.Errorf("server: %+v, %q", cfg, fatal)
	}
	cfg, fatal = callSystem(t, "client", fallback)
	if fatal != "" || cfg.Target != "/nix/store/bbbb-sys/boot.json" || cfg.StoreDir != "/srv/store" || cfg.ModulesDir != "/srv/mods" {
		t.Errorf("client: %+v, %q", cfg, fatal)
	}
	if fallbackCalled {
		t.Error("the fallback was called although SONIX_SYSTEMS is set")
	}

	// A name it lacks fails the test, naming those it has: a derivation's
	// test never boots something else than it was given.
	_, fatal = callSystem(t, "router", fallback)
	for _, want := range []string{`harness.System("router")`, `$SONIX_SYSTEMS has no system "router"`, `"client", "server"`} {
		if !strings.Contains(fatal, want) {
			t.Errorf("missing system: the message lacks %q: %s", want, fatal)
		}
	}
	if fallbackCalled {
		t.Error("the fallback was called for a system SONIX_SYSTEMS lacks")
	}
}

func TestSystemRelativePaths(t *testing.T) {
	t.Setenv(SystemsEnv, `{"vm":{"target":"result","store":"st"}}`)
	cfg, fatal := callSystem(t, "vm", nil)
	wd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	if fatal != "" || cfg.Target != filepath.Join(wd, "result") || cfg.StoreDir != filepath.Join(wd, "st") || cfg.ModulesDir != "" {
		t.Errorf("got %+v, %q", cfg, fatal)
	}
}

func TestSystemFallback(t *testing.T) {
	for _, env := range []string{"", "  "} {
		t.Setenv(SystemsEnv, env)
		var got testing.TB
		cfg, fatal := callSystem(t, "machine", func(tb testing.TB) config.Config {
			got = tb
			return config.Config{Target: "/built/here", StoreDir: "/built/store"}
		})
		if fatal != "" || cfg.Target != "/built/here" || cfg.StoreDir != "/built/store" || got == nil {
			t.Errorf("SONIX_SYSTEMS=%q: %+v, %q, fallback got %v", env, cfg, fatal, got)
		}
		_, fatal = callSystem(t, "machine", nil)
		if !strings.Contains(fatal, "$SONIX_SYSTEMS is not set and the test gives no fallback") {
			t.Errorf("SONIX_SYSTEMS=%q, no fallback: %q", env, fatal)
		}
	}
}

func TestSystemBadInput(t *testing.T) {
	for _, c := range []struct{ env, name, want string }{
		{`{"a":"/x"}`, "bad name", `harness.System("bad name"): a system's name is`},
		{`{"a":"/x"}`, "", `harness.System(""): a system's name is`},
		{`["/x"]`, "a", "expected a JSON object from names to systems"},
		{`null`, "a", "expected a JSON object from names to systems, not null"},
		{`{"a":`, "a", "expected a JSON object"},
		{`{"a":42}`, "a", `system "a": expected a path or {"target"`},
		{`{"a":{"target":"/x","disk":"/y"}}`, "a", `unknown field "disk"`},
		{`{"a":{"store":"/y"}}`, "a", `system "a": no target`},
		{`{"a":""}`, "a", `system "a": no target`},
		{`{"a b":"/x"}`, "a", `system name "a b": expected`},
	} {
		t.Setenv(SystemsEnv, c.env)
		_, fatal := callSystem(t, c.name, func(testing.TB) config.Config { return config.Config{Target: "fallback"} })
		if !strings.Contains(fatal, c.want) {
			t.Errorf("SONIX_SYSTEMS=%s, System(%q): got %q, want it to contain %q", c.env, c.name, fatal, c.want)
		}
	}
}
