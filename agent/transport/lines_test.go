package transport

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	id := NewSessionID()
	if len(id) != 32 {
		t.Fatalf("id %q", id)
	}
	for _, tc := range []struct {
		line string
		want Line
		err  string
	}{
		{"SONIX-RUN-AGENT 2 " + id, Line{2, id}, ""},
		{"SONIX-RUN-AGENT 1 anything at all", Line{1, ""}, ""},
		{"SONIX-RUN-AGENT 3 anything at all", Line{3, ""}, ""},
		{"SONIX-RUN-AGENT 9999", Line{9999, ""}, ""},
		{"SONIX-RUN-AGENT 2 resync", Line{2, ResyncToken}, ""},
		{"SONIX-RUN-AGENT 01 " + id, Line{}, `version "01" is not a number`},
		{"SONIX-RUN-AGENT 10000 x", Line{}, `version "10000"`},
		{"SONIX-RUN-AGENT x " + id, Line{}, `version "x"`},
		{"SONIX-RUN-AGENT  " + id, Line{}, `version ""`},
		{"SONIX-RUN-AGENT 2 " + strings.ToUpper(id), Line{}, "is not 32 lowercase hex digits"},
		{"SONIX-RUN-AGENT 2 " + id + " ", Line{}, "is not 32 lowercase hex digits"},
		{"SONIX-RUN-AGENT 2 " + id[:31], Line{}, "is not 32 lowercase hex digits"},
		{"SONIX-RUN-AGENT 2", Line{}, `session id ""`},
		{"SONIX-RUN-HOST 2 " + id, Line{}, "does not start with"},
	} {
		got, err := ParseLine([]byte(tc.line), AgentMagic)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.line, got, err, tc.want)
		}
	}
	for _, b := range [][]byte{AgentPreamble(id), HostAck(id), HostResync()} {
		if len(b) > MaxLine || b[len(b)-1] != '\n' {
			t.Errorf("%q", b)
		}
	}
}

func agentScanner() *LineScanner {
	return NewLineScanner(AgentMagic, func(line []byte) bool {
		_, err := ParseLine(line, AgentMagic)
		return err == nil
	})
}

func TestLineScanner(t *testing.T) {
	id := NewSessionID()
	pre := AgentPreamble(id)
	garbage := []byte("\x00\x01SONIX-RUN-AGENT 2 ab\nSONIX-RUN-AG" + strings.Repeat("x", 300) + "SONIX-RUN-AGENT 2 " + strings.Repeat("f", 200) + "\n")
	stream := append(append(append([]byte(nil), garbage...), pre...), "after"...)
	for _, chunk := range []int{1, 2, 7, 64, len(stream)} {
		s := agentScanner()
		var line, rest []byte
		found := false
		i := 0
		for ; i < len(stream) && !found; i += chunk {
			line, rest, found = s.Feed(stream[i:min(i+chunk, len(stream))])
			if len(s.pending) >= MaxLine {
				t.Fatalf("chunk %d: %d bytes kept", chunk, len(s.pending))
			}
		}
		if i < len(stream) {
			rest = append(rest, stream[i:]...)
		}
		if !found || string(line) != string(pre[:len(pre)-1]) || string(rest) != "after" {
			t.Errorf("chunk %d: %q %q %v", chunk, line, rest, found)
		}
	}
}

// FuzzLineScanner feeds the scanner a stream in pieces: it keeps at most
// MaxLine bytes, takes only lines that parse, and finds the same line and
// the same rest however the stream is cut.
func FuzzLineScanner(f *testing.F) {
	f.Add([]byte("xxSONIX-RUN-AGENT 2 "+NewSessionID()+"\nrest"), uint8(3))
	f.Add([]byte("SONIX-RUN-AGENT 3 x\n"), uint8(1))
	f.Add(append(bytes.Repeat([]byte("SONIX-RUN-AGENT "), 20), '\n'), uint8(5))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		whole := agentScanner()
		wLine, wRest, wFound := whole.Feed(stream)
		s := agentScanner()
		step := int(chunk)%17 + 1
		var line, rest []byte
		found := false
		i := 0
		for ; i < len(stream) && !found; i += step {
			line, rest, found = s.Feed(stream[i:min(i+step, len(stream))])
			if len(s.pending) >= MaxLine {
				t.Fatalf("%d bytes kept", len(s.pending))
			}
		}
		if found {
			if _, err := ParseLine(line, AgentMagic); err != nil || len(line) >= MaxLine {
				t.Fatalf("took %q: %v", line, err)
			}
			if i < len(stream) {
				rest = append(rest, stream[i:]...)
			}
		}
		if found != wFound || !bytes.Equal(line, wLine) || (found && !bytes.Equal(rest, wRest)) {
			t.Fatalf("in pieces of %d: %q %q %v; whole: %q %q %v", step, line, rest, found, wLine, wRest, wFound)
		}
	})
}
