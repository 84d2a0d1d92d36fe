package vlan

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// The control protocol, on each LAN's control.sock: the client sends one
// JSON request on one line, the switch answers one JSON line. After a "join"
// answer the connection stays open and *is* the port's reservation: the port
// lives until the client closes it (or dies), and the switch then closes its
// side, which tells the client that the port is gone.

const (
	opJoin    = "join"
	opBlock   = "block"
	opUnblock = "unblock"
	opStatus  = "status"

	maxRequestLine  = 4 << 10
	maxResponseLine = 4 << 20
	// MaxVMNameLen bounds the VM name a port is reserved for.
	MaxVMNameLen = 256
)

type request struct {
	Op  string `json:"op"`
	VM  string `json:"vm,omitempty"`
	MAC string `json:"mac,omitempty"`
}

type response struct {
	Error  string  `json:"error,omitempty"`
	Port   int     `json:"port,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// Status is a switch's view of its LAN.
type Status struct {
	LAN   string       `json:"lan"`
	PID   int          `json:"pid"` // the process running the switch
	Ports []PortStatus `json:"ports"`
}

// PortStatus describes one port. Counters are frames.
type PortStatus struct {
	ID        int    `json:"id"`
	VM        string `json:"vm"`
	MAC       string `json:"mac"`
	Connected bool   `json:"connected"` // QEMU is connected to the port's socket
	Blocked   bool   `json:"blocked"`
	Received  uint64 `json:"received"`  // read from the port
	Sent      uint64 `json:"sent"`      // written to the port
	Dropped   uint64 `json:"dropped"`   // for the port, lost to its full queue
	LastError string `json:"lastError"` // why its last connection was cut, if it was
}

// parsedRequest is a request whose fields are checked.
type parsedRequest struct {
	op  string
	vm  string
	mac [6]byte
}

// parseRequest checks one request line from a client.
func parseRequest(line []byte) (parsedRequest, error) {
	var r request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return parsedRequest{}, fmt.Errorf("request is not a JSON object of op, vm, mac: %v", err)
	}
	if dec.More() {
		return parsedRequest{}, errors.New("request has data after its JSON object")
	}
	p := parsedRequest{op: r.Op, vm: r.VM}
	switch r.Op {
	case opStatus:
		if r.VM != "" || r.MAC != "" {
			return p, errors.New(`request "status" takes no vm or mac`)
		}
		return p, nil
	case opJoin:
		if r.VM == "" || len(r.VM) > MaxVMNameLen {
			return p, fmt.Errorf(`request "join": vm must be 1 to %d bytes, got %d`, MaxVMNameLen, len(r.VM))
		}
	case opBlock, opUnblock:
		if r.VM != "" {
			return p, fmt.Errorf("request %q takes no vm", r.Op)
		}
	default:
		return p, fmt.Errorf("unknown request %q (expected join, block, unblock or status)", r.Op)
	}
	mac, err := parseMAC(r.MAC)
	if err != nil {
		return p, fmt.Errorf("request %q: %v", r.Op, err)
	}
	p.mac = mac
	return p, nil
}

// parseMAC accepts a unicast 48-bit Ethernet address.
func parseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return mac, fmt.Errorf("mac %q: expected a 48-bit Ethernet address like 02:00:00:00:00:01", s)
	}
	if !isUnicast(hw) {
		return mac, fmt.Errorf("mac %s is a group (multicast) address; a port needs a unicast one", hw)
	}
	copy(mac[:], hw)
	return mac, nil
}

// readLine reads one '\n'-terminated line of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, err
		}
	}
}

func marshalLine(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own request and response types get here
	}
	return append(b, '\n')
}
