package launcher

import (
	"bytes"
	"testing"
)

func TestMessagesEscapeControlCharacters(t *testing.T) {
	var b bytes.Buffer
	m := newMessages(&b, false, false)
	m.notice("sonix-run: %s", "target \x1b[31mred\x1b[0m")
	m.always("line one\nline two \x07")
	w := m.writer("qemu: ")
	w.Write([]byte("\x1b]0;title\x07 said\n"))
	want := "sonix-run: target \\x1b[31mred\\x1b[0m\nline one\nline two \\a\nqemu: \\x1b]0;title\\a said\n"
	if b.String() != want {
		t.Errorf("wrote %q\nwant  %q", b.String(), want)
	}
}
