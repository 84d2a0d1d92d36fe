package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Names of VMs and LANs are unique per process (a counter) and among the
// processes of one user (the process id: go test runs packages in parallel
// processes, each with its own counter). A dead process's leftovers under a
// reused pid are cleaned up by the launcher (run directories) and the
// switch (ports end with their holder).
var (
	nameSeq atomic.Uint64
	procTag = strconv.FormatInt(int64(os.Getpid()), 36)
)

// Length budgets. A VM name is at most 63 bytes (launcher.CheckName) and
// becomes a run directory name under $XDG_RUNTIME_DIR or $TMPDIR, whose
// socket paths must stay under 108 bytes; a LAN name is at most 32 bytes
// (vlan.MaxNameLen).
const (
	vmNamePrefixMax  = 30
	lanNamePrefixMax = 16
)

// uniqueVMName is a VM name made of prefix (a test name), the process and
// a counter.
func uniqueVMName(prefix string) string {
	return fmt.Sprintf("%s-%s-%d", sanitizeName(prefix, vmNamePrefixMax), procTag, nameSeq.Add(1))
}

// uniqueLANName is a LAN name made of prefix (a test name), the process and
// a counter.
func uniqueLANName(prefix string) string {
	return fmt.Sprintf("%s-%s-%d", sanitizeName(prefix, lanNamePrefixMax), procTag, nameSeq.Add(1))
}

// sanitizeName keeps the letters, digits, '.', '_' and '-' of s (others,
// such as a subtest's '/', become '.'), starts it with a letter or digit
// and cuts it to max bytes; "vm" if nothing is left.
func sanitizeName(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '.'
	}, s)
	s = strings.TrimLeft(s, "-_.")
	if len(s) > max {
		s = s[:max]
	}
	s = strings.TrimRight(s, "-_.")
	if s == "" {
		return "vm"
	}
	return s
}
