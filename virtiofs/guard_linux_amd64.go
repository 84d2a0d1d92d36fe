package virtiofs

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_X86_64

// archPrologue fails x32 system calls (numbers with bit 30 set), which have
// x86_64's audit arch but numbers of their own.
var archPrologue = []unix.SockFilter{
	jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, 0x40000000, 0, 1),
	ret(eperm),
}

// archRules are the checks of x86_64's older calls, which aarch64 lacks.
func archRules(uid, gid uint32) []rule {
	id := func(arg int, v uint32) [2]uint32 { return [2]uint32{uint32(arg), v} }
	return []rule{
		{unix.SYS_CHMOD, denyBits(1, setidBits, eperm)},
		{unix.SYS_OPEN, denyCreateBits(1, 2)},
		{unix.SYS_CREAT, denyBits(1, setidBits, eperm)},
		{unix.SYS_MKNOD, denyDevices(1)},
		{unix.SYS_CHOWN, onlyIDs(id(1, uid), id(2, gid))},
		{unix.SYS_LCHOWN, onlyIDs(id(1, uid), id(2, gid))},
	}
}
