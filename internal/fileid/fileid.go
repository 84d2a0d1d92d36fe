// Package fileid names one version of a file, so that what was learned
// about it (a virtiofsd's flavour, a kernel's content hash) can be reused
// until the file changes. The change time cannot be set from user space:
// a file rewritten in place, or replaced by one given the same inode, size
// and modification time, still gets a new ID (so does a new hard link,
// which only costs relearning).
package fileid

import "os"

// ID is one version of a file.
type ID struct {
	Dev     uint64 `json:"dev"`
	Inode   uint64 `json:"inode"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtimeNs"`
	CtimeNs int64  `json:"ctimeNs"`
}

// Of returns the ID of the file st describes; ok is false where the system
// gives no inode or change time (then nothing should be reused).
func Of(st os.FileInfo) (id ID, ok bool) {
	dev, ino, ctime, ok := sysIdentity(st)
	if !ok {
		return ID{}, false
	}
	return ID{Dev: dev, Inode: ino, Size: st.Size(), MtimeNs: st.ModTime().UnixNano(), CtimeNs: ctime}, true
}

// Stat returns the ID of the file at path as it is now.
func Stat(path string) (ID, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return ID{}, false
	}
	return Of(st)
}
