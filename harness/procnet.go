package harness

import (
	"bytes"
	"strconv"
	"strings"
)

// tcpListen is the state of a listening socket in /proc/net/tcp
// (TCP_LISTEN in the kernel's enum, printed in hex).
const tcpListen = "0A"

// tcpListening reports whether the kernel's TCP tables (the text of
// /proc/net/tcp and /proc/net/tcp6, in any order and number) hold a socket
// listening on port. Each socket's line reads
//
//	sl  local_address rem_address   st ...
//	0:  0100007F:0050 00000000:0000 0A ...
//
// with the local port in hex after the last colon of local_address. The
// text comes from the guest: lines that do not look like this are skipped.
func tcpListening(tables []byte, port int) bool {
	for len(tables) > 0 {
		line := tables
		if i := bytes.IndexByte(tables, '\n'); i >= 0 {
			line, tables = tables[:i], tables[i+1:]
		} else {
			tables = nil
		}
		f := strings.Fields(string(line))
		if len(f) < 4 || !strings.HasSuffix(f[0], ":") || f[3] != tcpListen {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if (i != 8 && i != 32) || len(f[1]) != i+5 { // IPv4 or IPv6 in hex, a colon, the port
			continue
		}
		p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err == nil && int(p) == port {
			return true
		}
	}
	return false
}
