package kernelimage

import (
	"encoding/binary"
	"io"
)

// A BCJ filter turns the relative targets of calls and branches into
// absolute ones before compression, so that repeated calls to one function
// look alike; decoding turns them back. The transforms are defined by the
// xz utilities (and the LZMA SDK before them): what follows implements the
// same arithmetic, so that the output matches xz's bit for bit.

type bcjCoder interface {
	// code converts buf in place (decode, or encode for tests) and returns
	// how many leading bytes are final; the rest must be presented again
	// with the bytes that follow them.
	code(buf []byte, encode bool) int
}

// bcjReader undoes a BCJ filter on what src yields.
type bcjReader struct {
	src    io.Reader
	coder  bcjCoder
	buf    []byte
	r, c   int // buf[r:c] is converted and not yet read; buf[c:w] awaits more bytes
	w      int
	srcErr error
}

func newBCJReader(src io.Reader, c bcjCoder) *bcjReader {
	return &bcjReader{src: src, coder: c, buf: make([]byte, 64<<10)}
}

func (b *bcjReader) Read(p []byte) (int, error) {
	for b.r == b.c {
		if b.srcErr != nil {
			if b.c < b.w {
				// The end of the data: the last few bytes hold no
				// whole instruction and pass unchanged.
				b.c = b.w
				continue
			}
			return 0, b.srcErr
		}
		// Move the bytes awaiting conversion to the front, fill behind
		// them and convert.
		n := copy(b.buf, b.buf[b.c:b.w])
		b.r, b.c, b.w = 0, 0, n
		m, err := io.ReadAtLeast(b.src, b.buf[b.w:], 1)
		b.w += m
		if err != nil {
			b.srcErr = err
		}
		b.c = b.coder.code(b.buf[:b.w], false)
	}
	n := copy(p, b.buf[b.r:b.c])
	b.r += n
	return n, nil
}

// x86BCJ is the x86 filter: E8 (call) and E9 (jmp) opcodes followed by a
// 32-bit displacement whose top byte is 0x00 or 0xFF. prevMask remembers
// which of the three bytes before the scan position held such opcodes
// that were left alone, because a displacement may not start inside one.
type x86BCJ struct {
	pos      uint32 // the stream offset of the next buffer's first byte
	prevMask uint32
}

var (
	x86MaskAllowed = [8]bool{true, true, true, false, true, false, false, false}
	x86MaskBits    = [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
)

func x86TopByte(b byte) bool { return b == 0x00 || b == 0xff }

func (s *x86BCJ) code(buf []byte, encode bool) int {
	if len(buf) <= 4 {
		return 0
	}
	limit := len(buf) - 4
	mask := s.prevMask
	lastOp := -1 // index of the previous opcode, -1 standing for "before buf"
	i := 0
	for ; i < limit; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		if d := i - lastOp; d > 3 {
			mask = 0
		} else {
			mask = (mask << (d - 1)) & 7
			if mask != 0 && (!x86MaskAllowed[mask] || x86TopByte(buf[i+4-int(x86MaskBits[mask])])) {
				lastOp = i
				mask = mask<<1 | 1
				continue
			}
		}
		lastOp = i
		if !x86TopByte(buf[i+4]) {
			mask = mask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			at := s.pos + uint32(i) + 5
			if encode {
				dest = src + at
			} else {
				dest = src - at
			}
			if mask == 0 {
				break
			}
			j := x86MaskBits[mask] * 8
			if !x86TopByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		// Keep 25 bits and sign-extend from bit 24.
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
	if d := i - lastOp; d > 3 {
		s.prevMask = 0
	} else {
		s.prevMask = mask << (d - 1)
	}
	s.pos += uint32(i)
	return i
}

// arm64BCJ is the ARM64 filter: BL instructions and ADRP instructions whose
// immediate is within ±512 MiB, at 4-byte alignment.
type arm64BCJ struct{ pos uint32 }

func (s *arm64BCJ) code(buf []byte, encode bool) int {
	i := 0
	for ; i+4 <= len(buf); i += 4 {
		pc := s.pos + uint32(i)
		ins := binary.LittleEndian.Uint32(buf[i:])
		switch {
		case ins>>26 == 0x25: // BL imm26, in words
			off := pc >> 2
			if !encode {
				off = -off
			}
			binary.LittleEndian.PutUint32(buf[i:], 0x94000000|(ins+off)&0x03ffffff)
		case ins&0x9f000000 == 0x90000000: // ADRP, in 4 KiB pages
			src := (ins>>29)&3 | (ins>>3)&0x001ffffc
			if (src+0x00020000)&0x001c0000 != 0 {
				continue // beyond ±512 MiB: left alone
			}
			off := pc >> 12
			if !encode {
				off = -off
			}
			dest := src + off
			ins &= 0x9000001f
			ins |= (dest & 3) << 29
			ins |= (dest & 0x0003fffc) << 3
			ins |= -(dest & 0x00020000) & 0x00e00000
			binary.LittleEndian.PutUint32(buf[i:], ins)
		}
	}
	s.pos += uint32(i)
	return i
}
