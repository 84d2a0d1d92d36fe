package vlan

import (
	"bufio"
	"encoding/json"
	"net"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	good := []struct {
		line string
		want parsedRequest
	}{
		{`{"op":"status"}`, parsedRequest{op: opStatus}},
		{`{"op":"join","vm":"server","mac":"02:00:00:00:00:01"}`, parsedRequest{op: opJoin, vm: "server", mac: [6]byte{2, 0, 0, 0, 0, 1}}},
		{`{"op":"block","mac":"02-aa-bb-cc-dd-ee"}`, parsedRequest{op: opBlock, mac: [6]byte{2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}}},
		{`{"op":"unblock","mac":"02:aa:bb:cc:dd:ee"}`, parsedRequest{op: opUnblock, mac: [6]byte{2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}}},
	}
	for _, tc := range good {
		got, err := parseRequest([]byte(tc.line))
		if err != nil || got != tc.want {
			t.Errorf("parseRequest(%s) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
	bad := []struct{ line, wantErr string }{
		{``, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`{"op":"status"} {}`, "data after"},
		{`{"op":"status","extra":1}`, "not a JSON object"},
		{`{"op":"reboot"}`, `unknown request "reboot"`},
		{`{"op":"status","vm":"x"}`, "takes no vm"},
		{`{"op":"join","mac":"02:00:00:00:00:01"}`, "vm must be 1 to 256 bytes"},
		{`{"op":"join","vm":"` + strings.Repeat("v", MaxVMNameLen+1) + `","mac":"02:00:00:00:00:01"}`, "vm must be"},
		{`{"op":"join","vm":"x","mac":"nonsense"}`, `mac "nonsense"`},
		{`{"op":"join","vm":"x","mac":"02:00:00:00:00:00:00:01"}`, "48-bit"},
		{`{"op":"block","mac":"01:00:5e:00:00:01"}`, "group (multicast)"},
		{`{"op":"block","mac":"ff:ff:ff:ff:ff:ff"}`, "group (multicast)"},
		{`{"op":"unblock","vm":"x","mac":"02:00:00:00:00:01"}`, "takes no vm"},
	}
	for _, tc := range bad {
		_, err := parseRequest([]byte(tc.line))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("parseRequest(%s) = %v, want an error containing %q", tc.line, err, tc.wantErr)
		}
	}
}

// FuzzParseRequest: any line gives a checked request or an error; accepted
// requests survive a round trip through the client's encoding.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"op":"join","vm":"server","mac":"02:00:00:00:00:01"}`))
	f.Add([]byte(`{"op":"block","mac":"02:00:00:00:00:01"}`))
	f.Add([]byte(`{"op":"status"}`))
	f.Add([]byte(`{"op":"join","vm":"\u0000","mac":"02-00-00-00-00-01"}`))
	f.Add([]byte(`{"op":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		p, err := parseRequest(line)
		if err != nil {
			return
		}
		switch p.op {
		case opStatus, opJoin, opBlock, opUnblock:
		default:
			t.Fatalf("accepted op %q", p.op)
		}
		if p.op != opStatus && p.mac[0]&1 != 0 {
			t.Fatalf("accepted group MAC %x", p.mac)
		}
		req := request{Op: p.op, VM: p.vm}
		if p.op != opStatus {
			req.MAC = net.HardwareAddr(p.mac[:]).String()
		}
		again, err := parseRequest(marshalLine(req)[:len(marshalLine(req))-1])
		if err != nil || again != p {
			t.Fatalf("round trip of %+v: %+v, %v", p, again, err)
		}
	})
}

func TestReadLine(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("short\n"+strings.Repeat("x", 100)+"\nrest"), 16)
	if line, err := readLine(br, 50); err != nil || string(line) != "short" {
		t.Fatalf("readLine = %q, %v", line, err)
	}
	if _, err := readLine(br, 50); err == nil || !strings.Contains(err.Error(), "longer than 50") {
		t.Fatalf("long line: %v", err)
	}
	var v struct{ A int }
	if err := json.Unmarshal(marshalLine(struct{ A int }{7}), &v); err != nil || v.A != 7 {
		t.Fatalf("marshalLine: %v %v", v, err)
	}
}
