package termsafe

import (
	"testing"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for _, c := range []struct{ in, line, text string }{
		{"plain text, tabs\tand ünïcödé", "plain text, tabs\tand ünïcödé", "plain text, tabs\tand ünïcödé"},
		{"\x1b]0;pwned\x07\x1b[2J", `\x1b]0;pwned\a\x1b[2J`, `\x1b]0;pwned\a\x1b[2J`},
		{"a\nb\rc", `a\nb\rc`, "a\nb\\rc"},
		{"\u009b31m C1 CSI", `\u009b31m C1 CSI`, `\u009b31m C1 CSI`},
		{"bad \xff byte", `bad \xff byte`, `bad \xff byte`},
		{"evil\u202etxt.exe", `evil\u202etxt.exe`, `evil\u202etxt.exe`},
		{"del\x7f", `del\x7f`, `del\x7f`},
	} {
		if got := Line(c.in); got != c.line {
			t.Errorf("Line(%q) = %q, want %q", c.in, got, c.line)
		}
		if got := Text(c.in); got != c.text {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.text)
		}
	}
}

func FuzzLine(f *testing.F) {
	for _, s := range []string{"", "ok", "\x1b[31mred", "\xff\xfe", "a\nb", "\u202e", "\x9b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{Line(s), Text(s)} {
			if !utf8.ValidString(out) {
				t.Fatalf("invalid UTF-8 out of %q: %q", s, out)
			}
			for _, r := range out {
				if r != '\t' && r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)) {
					t.Fatalf("control %U left in %q (from %q)", r, out, s)
				}
			}
		}
		for _, r := range Line(s) {
			if r == '\n' {
				t.Fatalf("newline left in Line(%q)", s)
			}
		}
	})
}
