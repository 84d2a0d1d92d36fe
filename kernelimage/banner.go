package kernelimage

import (
	"bytes"
	"fmt"
	"io"
)

// bannerPrefix starts linux_banner (init/version-timestamp.c), "Linux
// version <release> (<builder>) ...", which every uncompressed kernel holds.
var bannerPrefix = []byte("Linux version ")

// bannerWindow is how many bytes after the prefix decide a match: the
// release (at most 64 bytes), a space and "(".
const bannerWindow = maxRelease + 2

// releaseScanner is an io.Writer that finds the first well-formed banner in
// what is written through it, across write boundaries, without copying more
// than a window of each write.
type releaseScanner struct {
	release string
	carry   []byte // the last bytes of the previous writes
}

func (s *releaseScanner) Write(p []byte) (int, error) {
	if s.release != "" {
		return len(p), nil
	}
	keep := len(bannerPrefix) + bannerWindow
	// A banner that straddles the boundary lies within the carry plus the
	// first keep bytes of p.
	joined := append(s.carry, p[:min(len(p), keep)]...)
	if r := findRelease(joined); r != "" {
		s.release = r
		return len(p), nil
	}
	if len(p) <= keep {
		s.carry = append(s.carry[:0], joined[max(0, len(joined)-keep):]...)
		return len(p), nil
	}
	if r := findRelease(p); r != "" {
		s.release = r
		return len(p), nil
	}
	s.carry = append(joined[:0], p[len(p)-keep:]...)
	return len(p), nil
}

// findRelease returns the release of the first complete, well-formed banner
// in b; "" when there is none.
func findRelease(b []byte) string {
	for {
		i := bytes.Index(b, bannerPrefix)
		if i < 0 {
			return ""
		}
		b = b[i+len(bannerPrefix):]
		w := b[:min(len(b), bannerWindow)]
		if j := bytes.IndexByte(w, ' '); j > 0 && j+1 < len(w) && w[j+1] == '(' && validRelease(string(w[:j])) {
			return string(w[:j])
		}
	}
}

// scanRelease reads r to its end, at most maxUncompressed bytes, and returns
// the release named by its banner; "" when it has none.
func scanRelease(r io.Reader) (string, error) {
	var s releaseScanner
	buf := make([]byte, 1<<20)
	var total int64
	for s.release == "" {
		n, err := r.Read(buf)
		total += int64(n)
		if total > maxUncompressed {
			return "", fmt.Errorf("more than %d MiB; not a kernel", maxUncompressed>>20)
		}
		s.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return s.release, nil
}
