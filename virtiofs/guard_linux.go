//go:build linux && (amd64 || arm64)

package virtiofs

import (
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sonix-run/sonix-run/internal/proc"
)

const guardSupported = true

// Values the filter tests, the same on x86_64 and aarch64.
const (
	setidBits   = 0o6000                    // S_ISUID | S_ISGID
	fileType    = 0o170000                  // S_IFMT
	charDevice  = 0o020000                  // S_IFCHR
	blockDevice = 0o060000                  // S_IFBLK
	creates     = unix.O_CREAT | 0o20000000 // O_CREAT | __O_TMPFILE (O_TMPFILE less O_DIRECTORY)
	unchanged   = 0xffffffff                // (uid_t)-1 in an id argument
)

// Returns of the filter.
const (
	allow = unix.SECCOMP_RET_ALLOW
	// nothing: the call is not made and returns 0.
	nothing = unix.SECCOMP_RET_ERRNO | 0
	eperm   = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	enosys  = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// A block is the check of one system call: straight-line BPF that ends in
// a return on every path, with jumps only inside it.
type block []unix.SockFilter

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

func ret(v uint32) unix.SockFilter { return stmt(unix.BPF_RET|unix.BPF_K, v) }

// loadArg loads the low 32 bits of argument i of struct seccomp_data
// (little-endian): ids, modes and the flags tested all fit in them, and
// the kernel reads no more of an id or a mode.
func loadArg(i int) unix.SockFilter {
	return stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, uint32(16+8*i))
}

// denyBits fails the call with errno when argument arg has any of bits.
func denyBits(arg int, bits, errno uint32) block {
	return block{
		loadArg(arg),
		jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, bits, 0, 1),
		ret(errno),
		ret(allow),
	}
}

// denyCreateBits is denyBits for the mode of an open that creates a file.
func denyCreateBits(flagsArg, modeArg int) block {
	return block{
		loadArg(flagsArg),
		jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, creates, 0, 3),
		loadArg(modeArg),
		jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, setidBits, 0, 1),
		ret(eperm),
		ret(allow),
	}
}

// denyDevices fails a mknod of a device node, or with a setid bit.
func denyDevices(modeArg int) block {
	return block{
		loadArg(modeArg),
		stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, fileType),
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, charDevice, 3, 0),
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, blockDevice, 2, 0),
		loadArg(modeArg),
		jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, setidBits, 0, 1),
		ret(eperm),
		ret(allow),
	}
}

// onlyIDs lets the call through when each id argument is unchanged (-1) or
// its wanted value; otherwise the call does nothing and returns 0.
func onlyIDs(ids ...[2]uint32) block {
	var b block
	n := len(ids)
	for i, id := range ids {
		arg, want := int(id[0]), id[1]
		// To the next id's check, or past the last to allow; else to nothing.
		toNothing := uint8(3*(n-i) - 2)
		b = append(b,
			loadArg(arg),
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unchanged, 1, 0),
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, want, 0, toNothing))
	}
	return append(b, ret(allow), ret(nothing))
}

func always(v uint32) block { return block{ret(v)} }

// A rule is the block that checks one system call.
type rule struct {
	nr    int
	check block
}

// program is g's filter for this architecture.
func (g *guard) program() []unix.SockFilter {
	uid, gid := g.owner.uid, g.owner.gid
	id := func(arg int, v uint32) [2]uint32 { return [2]uint32{uint32(arg), v} }
	rules := []rule{
		{unix.SYS_FCHMOD, denyBits(1, setidBits, eperm)},
		{unix.SYS_FCHMODAT, denyBits(2, setidBits, eperm)},
		{unix.SYS_FCHMODAT2, denyBits(2, setidBits, eperm)},
		{unix.SYS_OPENAT, denyCreateBits(2, 3)},
		{unix.SYS_MKNODAT, denyDevices(2)},
		{unix.SYS_RENAMEAT2, denyBits(4, unix.RENAME_WHITEOUT, eperm)},
		{unix.SYS_FCHOWN, onlyIDs(id(1, uid), id(2, gid))},
		{unix.SYS_FCHOWNAT, onlyIDs(id(2, uid), id(3, gid))},
		{unix.SYS_SETUID, onlyIDs(id(0, uid))},
		{unix.SYS_SETGID, onlyIDs(id(0, gid))},
		{unix.SYS_SETREUID, onlyIDs(id(0, uid), id(1, uid))},
		{unix.SYS_SETREGID, onlyIDs(id(0, gid), id(1, gid))},
		{unix.SYS_SETRESUID, onlyIDs(id(0, uid), id(1, uid), id(2, uid))},
		{unix.SYS_SETRESGID, onlyIDs(id(0, gid), id(1, gid), id(2, gid))},
		{unix.SYS_SETFSUID, onlyIDs(id(0, uid))},
		{unix.SYS_SETFSGID, onlyIDs(id(0, gid))},
	}
	rules = append(rules, archRules(uid, gid)...)
	if g.noOpenat2 {
		rules = append(rules, rule{unix.SYS_OPENAT2, always(enosys)})
	}

	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 4), // arch
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, auditArch, 1, 0),
		ret(eperm), // another architecture's calls: the daemon makes none
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 0), // nr
	}
	prog = append(prog, archPrologue...)
	for _, r := range rules {
		if len(r.check) > 255 {
			panic("virtiofs: guard block too long")
		}
		prog = append(prog, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(r.nr), 0, uint8(len(r.check))))
		prog = append(prog, r.check...)
	}
	return append(prog, ret(allow))
}

// install puts g's filter on the calling thread, for good: it and what it
// forks from now on run under it.
func (g *guard) install() error {
	prog := g.program()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// Flags 0, not SECCOMP_FILTER_FLAG_TSYNC: this thread only.
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	}
	runtime.KeepAlive(prog)
	return nil
}

// The daemons of writable shares are forked from a thread of their own
// that holds the guard's filter (internal/proc's Spawner), one per guard.
var (
	spawnersMu sync.Mutex
	spawners   = map[guard]*proc.Spawner{}
)

func spawnerFor(g *guard) *proc.Spawner {
	spawnersMu.Lock()
	defer spawnersMu.Unlock()
	if s := spawners[*g]; s != nil {
		return s
	}
	s := proc.NewSpawner(g.install)
	spawners[*g] = s
	return s
}

// checkGuard reports whether g's filter can be put on a thread.
func checkGuard(g *guard) error {
	if err := spawnerFor(g).Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnguarded, err)
	}
	return nil
}

// startGuarded starts cmd under g's filter, as internal/proc starts every
// helper (its own process group, killed by the kernel if sonix-run dies).
func startGuarded(cmd *exec.Cmd, g *guard) error {
	if err := checkGuard(g); err != nil {
		return err
	}
	return spawnerFor(g).Start(cmd)
}
