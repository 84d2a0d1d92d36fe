package fileid

import (
	"os"
	"syscall"
)

func sysIdentity(st os.FileInfo) (dev, ino uint64, ctimeNs int64, ok bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0, false
	}
	return uint64(s.Dev), uint64(s.Ino), s.Ctim.Nano(), true
}
