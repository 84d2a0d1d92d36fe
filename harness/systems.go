package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/config"
)

// SystemsEnv names the environment variable that says which systems a test
// boots, by the names the test gives them: a JSON object from each name to
// a system, either a string (a toplevel directory, its boot.json, or a
// link to either, whose store is /nix/store) or an object with "target"
// and, optionally, "store" and "modules" (config.Config's Target,
// StoreDir and ModulesDir). A relative path is taken from the test's
// working directory (under go test, the package's directory).
//
// The derivations of the flake's lib.runTest set it to the toplevels of the
// systems under test (nix/run-test.nix); set it yourself to run the same
// test against systems you built:
//
//	SONIX_SYSTEMS='{"server":"/nix/store/...-nixos-system-server-..."}' go test ./tests
const SystemsEnv = "SONIX_SYSTEMS"

// systemName is what a system's name may be: what a Nix attribute, a host
// name and a VM name all accept.
var systemName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// System returns the configuration that boots the system under test called
// name: the one SONIX_SYSTEMS names (see SystemsEnv) when it is set, else
// what fallback returns (for example a system the test builds itself, as
// the examples do with the project's test system). The test sets the rest
// of the configuration (memory, CPUs, networks) on the result:
//
//	cfg := harness.System(t, "server", buildMySystem)
//	cfg.MemoryMiB = 512
//	server := harness.StartT(t, cfg)
//
// It fails the test when SONIX_SYSTEMS is set but malformed or lacks name
// (the message lists the names it has), and when it is unset and fallback
// is nil. So a test run by a derivation never silently boots something
// else than the system it was given.
func System(t testing.TB, name string, fallback func(testing.TB) config.Config) config.Config {
	t.Helper()
	if !systemName.MatchString(name) {
		t.Fatalf("harness.System(%q): a system's name is a letter or digit, then letters, digits, '-' or '_' (at most 63)", name)
	}
	raw, set := os.LookupEnv(SystemsEnv)
	if !set || strings.TrimSpace(raw) == "" {
		if fallback == nil {
			t.Fatalf("harness.System(%q): $%s is not set and the test gives no fallback; set it, e.g. %s='{\"%s\":\"./result\"}'", name, SystemsEnv, SystemsEnv, name)
		}
		cfg := fallback(t)
		return cfg
	}
	systems, err := parseSystems(raw)
	if err != nil {
		t.Fatalf("harness.System(%q): $%s: %v", name, SystemsEnv, err)
	}
	cfg, ok := systems[name]
	if !ok {
		t.Fatalf("harness.System(%q): $%s has no system %q; it has %s", name, SystemsEnv, name, names(systems))
	}
	return cfg
}

// systemEntry is the object form of a SONIX_SYSTEMS value.
type systemEntry struct {
	Target  string `json:"target"`
	Store   string `json:"store"`
	Modules string `json:"modules"`
}

// parseSystems reads the value of SONIX_SYSTEMS.
func parseSystems(raw string) (map[string]config.Config, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("expected a JSON object from names to systems: %v", err)
	}
	if m == nil {
		return nil, fmt.Errorf("expected a JSON object from names to systems, not null")
	}
	out := make(map[string]config.Config, len(m))
	for name, v := range m {
		if !systemName.MatchString(name) {
			return nil, fmt.Errorf("system name %q: expected a letter or digit, then letters, digits, '-' or '_' (at most 63)", name)
		}
		var e systemEntry
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			e.Target = s
		} else {
			dec := json.NewDecoder(strings.NewReader(string(v)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil {
				return nil, fmt.Errorf("system %q: expected a path or {\"target\": PATH, \"store\": DIR, \"modules\": DIR}: %v", name, err)
			}
		}
		if e.Target == "" {
			return nil, fmt.Errorf("system %q: no target (a toplevel or its boot.json)", name)
		}
		cfg := config.Config{Target: e.Target, StoreDir: e.Store, ModulesDir: e.Modules}
		for _, p := range []*string{&cfg.Target, &cfg.StoreDir, &cfg.ModulesDir} {
			if *p == "" || filepath.IsAbs(*p) {
				continue
			}
			abs, err := filepath.Abs(*p)
			if err != nil {
				return nil, fmt.Errorf("system %q: %v", name, err)
			}
			*p = abs
		}
		out[name] = cfg
	}
	return out, nil
}

func names(systems map[string]config.Config) string {
	if len(systems) == 0 {
		return "none"
	}
	var ns []string
	for n := range systems {
		ns = append(ns, fmt.Sprintf("%q", n))
	}
	sort.Strings(ns)
	return strings.Join(ns, ", ")
}
