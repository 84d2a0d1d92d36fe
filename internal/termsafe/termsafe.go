// Package termsafe makes text that may come from a guest (an agent's error
// message, a VM's target, a file name) safe to write to a terminal inside
// sonix-run's own messages: control characters, which could move the
// cursor, rewrite earlier lines, retitle the window or answer back to the
// terminal, are shown as escapes instead.
package termsafe

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line returns s with every control character (C0 but tab, DEL, C1, and
// newlines too: a message stays one line) and every invalid UTF-8 byte
// replaced by a Go escape such as \x1b or \n. Text without them comes back
// unchanged.
func Line(s string) string {
	if clean(s, false) {
		return s
	}
	return escape(s, false)
}

// Text is Line for messages of several lines: newlines are kept.
func Text(s string) string {
	if clean(s, true) {
		return s
	}
	return escape(s, true)
}

func clean(s string, keepNewlines bool) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if bad(r, n, keepNewlines) {
			return false
		}
		i += n
	}
	return true
}

func bad(r rune, size int, keepNewlines bool) bool {
	switch {
	case r == utf8.RuneError && size == 1:
		return true
	case r == '\t', keepNewlines && r == '\n':
		return false
	}
	// Also the format characters that reorder or hide text (bidirectional
	// overrides and isolates).
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

func escape(s string, keepNewlines bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x` + strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case bad(r, n, keepNewlines):
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\n', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
