package kconfig

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Config is a kernel configuration: each CONFIG_ symbol that is set, without
// the prefix, to its value ("y", "m", a number, or a string with its quotes).
// A "# CONFIG_X is not set" line gives "n".
type Config map[string]string

// maxConfigSize bounds a configuration, decompressed: real ones are under
// 1 MiB, and the embedded one is gzip, so a hostile image could inflate.
const maxConfigSize = 16 << 20

// entry is one assignment in a config text.
type entry struct {
	line  int
	name  string // without CONFIG_
	value string
}

// parse reads a .config or a fragment: assignments, "is not set" comments,
// other comments and blank lines. Anything else is an error naming the line.
func parse(data []byte) ([]entry, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("kconfig: config is %d bytes, more than the %d a kernel config can be", len(data), maxConfigSize)
	}
	var out []entry
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			if name, ok := notSet(trimmed); ok {
				if !validName(name) {
					return nil, fmt.Errorf("kconfig: line %d: bad option name in %q", n, clip(trimmed))
				}
				out = append(out, entry{n, name, "n"})
			}
			continue
		}
		key, value, ok := strings.Cut(trimmed, "=")
		if !ok {
			return nil, fmt.Errorf("kconfig: line %d: %q is neither CONFIG_NAME=VALUE nor a comment", n, clip(trimmed))
		}
		name, ok := strings.CutPrefix(key, "CONFIG_")
		if !ok || !validName(name) {
			return nil, fmt.Errorf("kconfig: line %d: %q is not a CONFIG_ option name", n, clip(key))
		}
		if err := validValue(value); err != nil {
			return nil, fmt.Errorf("kconfig: line %d: CONFIG_%s: %v", n, name, err)
		}
		out = append(out, entry{n, name, value})
	}
	return out, nil
}

// notSet recognises "# CONFIG_X is not set".
func notSet(comment string) (string, bool) {
	rest, ok := strings.CutPrefix(comment, "# CONFIG_")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, " is not set")
}

// validName reports whether s can follow CONFIG_: Kconfig symbols are
// letters, digits and underscores.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// validValue accepts what Kconfig writes: a quoted string (with \" and \\
// escapes) or a bare word (y, m, n, a decimal or hex number).
func validValue(v string) error {
	if strings.HasPrefix(v, `"`) {
		if len(v) < 2 || !strings.HasSuffix(v, `"`) {
			return errors.New("unterminated string")
		}
		body := v[1 : len(v)-1]
		for i := 0; i < len(body); i++ {
			switch body[i] {
			case '\\':
				i++
				if i == len(body) {
					return errors.New("string ends in a lone backslash")
				}
			case '"':
				return errors.New("unescaped quote inside a string")
			}
		}
		return nil
	}
	if v == "" {
		return errors.New("empty value")
	}
	for _, r := range v {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '+') {
			return fmt.Errorf("value %q is neither a word, a number nor a quoted string", clip(v))
		}
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// ParseConfig parses a kernel .config (or a fragment). As in Kconfig, a later
// assignment of the same option wins.
func ParseConfig(data []byte) (Config, error) {
	entries, err := parse(data)
	if err != nil {
		return nil, err
	}
	c := make(Config, len(entries))
	for _, e := range entries {
		c[e.name] = e.value
	}
	return c, nil
}

// ErrNoEmbeddedConfig says an image carries no configuration: the kernel was
// built without CONFIG_IKCONFIG, or with it as a module (configs.ko).
var ErrNoEmbeddedConfig = errors.New("kconfig: the kernel image has no embedded config (CONFIG_IKCONFIG=y)")

// ikconfigStart is the marker kernel/configs.c puts before the gzip'd
// config, followed by the gzip magic and method (deflate), as
// scripts/extract-ikconfig looks for it: the marker alone also appears in
// the code that refers to it.
var ikconfigStart = []byte("IKCFG_ST\x1f\x8b\x08")

// EmbeddedConfig returns the configuration a kernel built with
// CONFIG_IKCONFIG=y carries: the gzip'd .config between the markers IKCFG_ST
// and IKCFG_ED. image must be uncompressed (vmlinux, an arm64 Image, or a
// bzImage's decompressed payload); ErrNoEmbeddedConfig when there is none.
func EmbeddedConfig(image []byte) ([]byte, error) {
	i := bytes.Index(image, ikconfigStart)
	if i < 0 {
		return nil, ErrNoEmbeddedConfig
	}
	zr, err := gzip.NewReader(bytes.NewReader(image[i+len("IKCFG_ST"):]))
	if err != nil {
		return nil, fmt.Errorf("kconfig: embedded config: %w", err)
	}
	// One gzip member: IKCFG_ED follows it, not another member.
	zr.Multistream(false)
	data, err := io.ReadAll(io.LimitReader(zr, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("kconfig: embedded config: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("kconfig: embedded config inflates past %d bytes", maxConfigSize)
	}
	return data, nil
}
