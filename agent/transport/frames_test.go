package transport

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"testing"
)

// frame is one yamux frame for the tests.
type frame struct {
	typ   byte
	flags uint16
	id    uint32
	body  []byte // data frames
	n     uint32 // other frames' length field
}

func (f frame) bytes() []byte {
	h := make([]byte, 12)
	h[1] = f.typ
	binary.BigEndian.PutUint16(h[2:], f.flags)
	binary.BigEndian.PutUint32(h[4:], f.id)
	if f.typ == 0 {
		binary.BigEndian.PutUint32(h[8:], uint32(len(f.body)))
	} else {
		binary.BigEndian.PutUint32(h[8:], f.n)
	}
	return append(h, f.body...)
}

func randomFrames(r *rand.Rand, n, maxBody int) []frame {
	var fs []frame
	for i := 0; i < n; i++ {
		f := frame{typ: byte(r.Intn(4)), flags: uint16(r.Intn(16)), id: uint32(r.Intn(5))}
		if f.typ == 0 {
			f.body = make([]byte, r.Intn(3)*r.Intn(maxBody/2+1))
			r.Read(f.body)
		} else {
			f.n = r.Uint32()
		}
		fs = append(fs, f)
	}
	return fs
}

// parseFrames splits a stream of whole frames.
func parseFrames(t *testing.T, b []byte) []frame {
	t.Helper()
	var fs []frame
	for len(b) > 0 {
		if len(b) < 12 || b[0] != 0 {
			t.Fatalf("not a frame: %q", b[:min(len(b), 12)])
		}
		f := frame{typ: b[1], flags: binary.BigEndian.Uint16(b[2:]), id: binary.BigEndian.Uint32(b[4:])}
		n := binary.BigEndian.Uint32(b[8:])
		b = b[12:]
		if f.typ == 0 {
			f.body, b = b[:n], b[n:]
		} else {
			f.n = n
		}
		fs = append(fs, f)
	}
	return fs
}

func TestFrameTracker(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	frames := randomFrames(r, 200, 80000)
	var stream []byte
	for _, f := range frames {
		stream = append(stream, f.bytes()...)
	}
	boundary := len(stream)
	stream = append(stream, AgentPreamble(NewSessionID())...)
	for _, step := range []int{1, 5, 12, 13, 4096, len(stream)} {
		var tr FrameTracker
		taken := 0
		stopped := false
		for i := 0; i < len(stream) && !stopped; i += step {
			var n int
			n, stopped = tr.Advance(stream[i:min(i+step, len(stream))])
			taken += n
		}
		if !stopped || taken != boundary || tr.InFrame() != 0 {
			t.Errorf("step %d: stopped %v after %d bytes (in frame %d), want at %d", step, stopped, taken, tr.InFrame(), boundary)
		}
	}
	var tr FrameTracker
	partial := frame{typ: 0, id: 1, body: make([]byte, 100)}.bytes()[:50]
	if n, stopped := tr.Advance(partial); n != 50 || stopped || tr.InFrame() != 50 {
		t.Errorf("a partial frame: %d %v %d", n, stopped, tr.InFrame())
	}
}

// checkWriter writes frames through a FrameWriter in pieces and checks
// that every emitted frame is whole and within the bound, and that each
// stream gets the same bytes with its flags where they belong.
func checkWriter(t *testing.T, frames []frame, max int, cut func(int) int) {
	t.Helper()
	var out []byte
	emits := 0
	w := NewFrameWriter(func(b []byte) error {
		emits++
		if max > 0 && len(b) > max {
			t.Fatalf("a frame of %d bytes, bound %d", len(b), max)
		}
		if got := parseFrames(t, b); len(got) != 1 {
			t.Fatalf("an emit of %d frames", len(got))
		}
		out = append(out, b...)
		return nil
	}, max)
	var in []byte
	for _, f := range frames {
		in = append(in, f.bytes()...)
	}
	for len(in) > 0 {
		k := min(cut(len(in)), len(in))
		if n, err := w.Write(in[:k]); n != k || err != nil {
			t.Fatalf("write: %d %v", n, err)
		}
		in = in[k:]
	}
	got := parseFrames(t, out)
	gi := 0
	for _, f := range frames {
		if f.typ != 0 || len(f.body) == 0 {
			if gi >= len(got) || got[gi].typ != f.typ || got[gi].flags != f.flags || got[gi].id != f.id || got[gi].n != f.n || len(got[gi].body) != 0 {
				t.Fatalf("frame %+v came out as %+v", f, got[gi:min(gi+1, len(got))])
			}
			gi++
			continue
		}
		var body []byte
		var flags uint16
		for first := true; len(body) < len(f.body); first = false {
			g := got[gi]
			gi++
			if g.typ != 0 || g.id != f.id || len(g.body) == 0 {
				t.Fatalf("piece %+v of %+v", g, f)
			}
			if !first && g.flags&^(yamuxFlagFIN|yamuxFlagRST) != 0 || len(body)+len(g.body) < len(f.body) && g.flags&(yamuxFlagFIN|yamuxFlagRST) != 0 {
				t.Fatalf("flags %x on a middle piece of %+v", g.flags, f.flags)
			}
			flags |= g.flags
			body = append(body, g.body...)
		}
		if !bytes.Equal(body, f.body) || flags != f.flags {
			t.Fatalf("data frame of %d bytes with flags %x came out as %d bytes with %x", len(f.body), f.flags, len(body), flags)
		}
	}
	if gi != len(got) {
		t.Fatalf("%d extra frames", len(got)-gi)
	}
}

func TestFrameWriter(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	frames := randomFrames(r, 300, 80000)
	small := randomFrames(r, 100, 300)
	// yamux's own pattern: a header, then its body, with two writes.
	var yamuxCuts []int
	for _, f := range frames {
		yamuxCuts = append(yamuxCuts, 12)
		if len(f.body) > 0 {
			yamuxCuts = append(yamuxCuts, len(f.body))
		}
	}
	for _, max := range []int{0, MaxPortWrite, 1000} {
		i := 0
		checkWriter(t, frames, max, func(int) int { i++; return yamuxCuts[i-1] })
		checkWriter(t, frames, max, func(int) int { return 1 + r.Intn(70000) })
	}
	for _, max := range []int{0, 13, 100} {
		checkWriter(t, small, max, func(int) int { return 1 })
		checkWriter(t, small, max, func(int) int { return 1 + r.Intn(50) })
	}
	// yamux's writes become one emit per frame without a bound.
	emits := 0
	w := NewFrameWriter(func([]byte) error { emits++; return nil }, 0)
	for _, f := range frames {
		b := f.bytes()
		w.Write(b[:12])
		if len(b) > 12 {
			w.Write(b[12:])
		}
	}
	if emits != len(frames) {
		t.Errorf("%d emits for %d frames", emits, len(frames))
	}
}

// FuzzFrameWriter: frames made from the input, written in pieces, come out
// whole, bounded and the same.
func FuzzFrameWriter(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 200, 7, 8}, uint16(30), uint8(5))
	f.Add([]byte{0, 3, 0, 0, 0}, uint16(0), uint8(1))
	f.Fuzz(func(t *testing.T, spec []byte, max uint16, step uint8) {
		var frames []frame
		for len(spec) >= 3 {
			fr := frame{typ: spec[0] % 4, flags: uint16(spec[1] % 16), id: uint32(spec[2] % 3)}
			if fr.typ == 0 {
				fr.body = bytes.Repeat([]byte{spec[1]}, int(spec[2])*37)
			} else {
				fr.n = uint32(spec[2])
			}
			frames = append(frames, fr)
			spec = spec[3:]
		}
		bound := 0
		if max > 0 {
			bound = 13 + int(max)%5000
		}
		checkWriter(t, frames, bound, func(int) int { return int(step)%50 + 1 })
	})
}
