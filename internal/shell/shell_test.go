package shell

import (
	"os/exec"
	"testing"
)

// What Join and Comment write reads back, word for word, in a real shell;
// a comment stays a comment whatever it holds.
func TestRoundTripThroughSh(t *testing.T) {
	words := []string{"plain", "a b", "it's", "$HOME", "`x`", "new\nline", "", "-", "é", "a=b", "#x", "~"}
	script := "printf '%s\\0' " + Join(words) + "\n" + Comment("x\ntouch pwned\n\rrm -rf /") + "\n"
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	start := 0
	for i, b := range out {
		if b == 0 {
			got = append(got, string(out[start:i]))
			start = i + 1
		}
	}
	if len(got) != len(words) {
		t.Fatalf("got %q, want %q", got, words)
	}
	for i := range words {
		if got[i] != words[i] {
			t.Errorf("word %d: got %q, want %q", i, got[i], words[i])
		}
	}
}
