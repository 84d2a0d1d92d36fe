package virtiofs

import "fmt"

// What a guest may leave in a writable share.
//
// virtiofsd does on the host what the guest asks for. Run as root (the
// legacy daemon must be), it would make a setuid-root program, a device
// node, or a file owned by any uid when a root guest asks: chmod 4755,
// mknod, chown, or a file made by the guest's user 1000 (owned by host uid
// 1000, whoever that is). Run as a user, it makes setuid programs of that
// user. Another local user who can reach the directory could then run code
// as root or as that user, or open a disk. The bits cannot be kept out by a
// nosuid or nodev mount: they are stored all the same, and seen through
// the directory's own path.
//
// So a writable share's daemon runs under a seccomp filter (guard), put on
// it by sonix-run when it starts it, that makes the system calls it would
// do such things with fail, or do nothing:
//
//   - chmod, fchmod, fchmodat, fchmodat2 with a setuid or setgid bit: EPERM.
//     (A guest's chmod that keeps such a bit already there fails too.)
//   - open, openat, creat that create a file (O_CREAT, O_TMPFILE) with one
//     of those bits: EPERM. openat2, whose mode the filter cannot read,
//     fails with ENOSYS where the daemon runs chrooted into the share (as
//     root), and falls back to openat; unprivileged, the Rust daemon needs
//     openat2 to stay inside the share, so it keeps it, and what it creates
//     with such a bit loses it on the first write (it has no CAP_FSETID):
//     at most an empty file keeps one.
//   - mknod, mknodat of a character or block device, or with those bits:
//     EPERM. FIFOs and sockets are made. renameat2 with RENAME_WHITEOUT
//     (which makes a 0:0 character device): EPERM.
//   - chown, fchown, lchown, fchownat to an id other than the owner's:
//     success, doing nothing, so a guest's tar or cp -a goes on while every
//     file stays the owner's.
//   - setuid, setresuid, setfsuid and the like (the daemon takes the guest
//     user's ids to make its files) to an id other than the owner's:
//     success, doing nothing, so the file is made as the owner.
//
// Besides, the command line (Args) gives a root daemon no CAP_MKNOD and no
// CAP_FSETID (so that the guest's writes to a setuid file already on the
// host clear its bits, as anyone's but root's do), and has a Rust daemon
// (>= 1.13) translate every guest uid and gid to the owner's.
//
// The owner is the user running sonix-run: root's files when root runs
// it. A guest user other than root still makes files where the directory
// lets it, but they are the owner's, in the guest too where the daemon
// shows host ids (the legacy one): that user cannot write to them again
// unless their mode lets others.
//
// Root in the guest may do anything in the guest, so none of this takes
// from it what it could not already do there; it only keeps it from
// reaching other users of the host. The filter is the daemon's only:
// sonix-run forks it from a thread of its own that holds the filter (and
// no_new_privs), and nothing else runs on that thread.

// guard is the filter a writable share's daemon runs under.
type guard struct {
	owner ids
	// noOpenat2: openat2 fails with ENOSYS (the daemon is chrooted into
	// the share, so openat is as safe).
	noOpenat2 bool
}

// GuardNote is a comment line, for a script that runs the command line Args
// gives for s (--dry-run), saying what it leaves out: the filter, which
// only sonix-run puts on the daemon. "" for a read-only share.
func GuardNote(s Share) string {
	if s.ReadOnly {
		return ""
	}
	o := s.owner()
	return fmt.Sprintf("# %q: sonix-run also runs this virtiofsd under a seccomp filter that refuses setuid/setgid modes and device nodes and keeps every file %d:%d's; run from here, it has none",
		s.Name, o.uid, o.gid)
}
