package agent

import (
	"strings"
	"testing"
)

// The guest chooses its error messages: they must not carry terminal
// escapes or extra lines into sonix-run's messages.
func TestGuestErrorIsOneSafeLine(t *testing.T) {
	e := &GuestError{Op: "get", Message: "no such file\x1b]0;owned\x07\nsonix-run: all good\r\x1b[2K"}
	got := e.Error()
	if strings.ContainsAny(got, "\x1b\x07\n\r") {
		t.Fatalf("control characters reach the terminal: %q", got)
	}
	if want := `agent: get: no such file\x1b]0;owned\a\nsonix-run: all good\r\x1b[2K`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
