package kernelimage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel's xz streams (scripts/xz_wrap.sh) put a branch/call/jump
// (BCJ) filter before LZMA2: --x86 on x86, --arm64 on arm64 since Linux
// 6.12. github.com/ulikunitz/xz reads only bare LZMA2 blocks, so this file
// reads the .xz container (https://tukaani.org/xz/xz-file-format.txt),
// hands the LZMA2 data to ulikunitz/xz/lzma, and undoes the BCJ filter
// itself. It reads one stream and stops at its index: what follows (the
// kernel's appended length) is not read. Each block's check is verified.

// xz filter IDs (xz-file-format.txt section 5.3, and xz's filter list).
const (
	xzFilterX86   = 0x04
	xzFilterARM64 = 0x0a
	xzFilterLZMA2 = 0x21
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

type xzReader struct {
	src       *countingReader
	checkType byte
	block     io.Reader // the current block's decoded data; nil between blocks
	check     hash.Hash // the current block's check; nil for check type 0 or unknown types
	// The current block's start offset, where its data starts, its sizes
	// from the header (-1 when absent) and how much it has yielded.
	blockStart, dataStart    int64
	compressed, uncompressed int64
	produced                 int64
	// records are the blocks' (unpadded size, uncompressed size), which
	// the index must repeat.
	records    [][2]uint64
	streamFlag []byte
	done       bool
	err        error
}

type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func newXZReader(src io.Reader) (*xzReader, error) {
	cr := &countingReader{r: bufio.NewReaderSize(src, 64<<10)}
	hdr := make([]byte, 12)
	if _, err := io.ReadFull(cr, hdr); err != nil {
		return nil, fmt.Errorf("xz stream header: %w", noEOF(err))
	}
	if !bytes.Equal(hdr[:6], xzMagic) {
		return nil, errors.New("xz: no stream header magic")
	}
	if crc32.ChecksumIEEE(hdr[6:8]) != binary.LittleEndian.Uint32(hdr[8:]) {
		return nil, errors.New("xz: stream header CRC32 mismatch")
	}
	if hdr[6] != 0 || hdr[7]&0xf0 != 0 {
		return nil, fmt.Errorf("xz: unsupported stream flags % x", hdr[6:8])
	}
	return &xzReader{src: cr, checkType: hdr[7] & 0x0f, streamFlag: append([]byte(nil), hdr[6:8]...)}, nil
}

func (x *xzReader) Read(p []byte) (int, error) {
	if x.err != nil {
		return 0, x.err
	}
	for {
		if x.done {
			return 0, io.EOF
		}
		if x.block == nil {
			if err := x.startBlock(); err != nil {
				x.err = err
				return 0, err
			}
			continue
		}
		n, err := x.block.Read(p)
		if n > 0 {
			x.produced += int64(n)
			if x.check != nil {
				x.check.Write(p[:n])
			}
			if x.uncompressed >= 0 && x.produced > x.uncompressed {
				x.err = fmt.Errorf("xz: block yields more than the %d bytes its header declares", x.uncompressed)
				return 0, x.err
			}
		}
		if errors.Is(err, io.EOF) {
			if err := x.endBlock(); err != nil {
				x.err = err
				return n, err
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			x.err = fmt.Errorf("xz: %w", noEOF(err))
			return n, x.err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// startBlock reads a block header and sets up its filter chain, or on the
// index indicator marks the stream done.
func (x *xzReader) startBlock() error {
	x.blockStart = x.src.n
	first, err := x.src.ReadByte()
	if err != nil {
		return fmt.Errorf("xz block header: %w", noEOF(err))
	}
	if first == 0 {
		// The index: every block has been read.
		if err := x.readIndex(); err != nil {
			return err
		}
		x.done = true
		return nil
	}
	hdr := make([]byte, (int(first)+1)*4)
	hdr[0] = first
	if _, err := io.ReadFull(x.src, hdr[1:]); err != nil {
		return fmt.Errorf("xz block header: %w", noEOF(err))
	}
	body, sum := hdr[:len(hdr)-4], hdr[len(hdr)-4:]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(sum) {
		return errors.New("xz: block header CRC32 mismatch")
	}
	flags := body[1]
	if flags&0x3c != 0 {
		return fmt.Errorf("xz: reserved block flags set (0x%02x)", flags)
	}
	rest := body[2:]
	x.compressed, x.uncompressed = -1, -1
	if flags&0x40 != 0 {
		v, err := uvarint(&rest)
		if err != nil {
			return fmt.Errorf("xz block compressed size: %w", err)
		}
		x.compressed = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := uvarint(&rest)
		if err != nil {
			return fmt.Errorf("xz block uncompressed size: %w", err)
		}
		x.uncompressed = int64(v)
	}
	type filter struct {
		id    uint64
		props []byte
	}
	var chain []filter
	for i := 0; i <= int(flags&0x03); i++ {
		id, err := uvarint(&rest)
		if err != nil {
			return fmt.Errorf("xz filter ID: %w", err)
		}
		n, err := uvarint(&rest)
		if err != nil || n > uint64(len(rest)) {
			return errors.New("xz: filter properties run past the block header")
		}
		chain = append(chain, filter{id, rest[:n]})
		rest = rest[n:]
	}
	if !allZero(rest) {
		return errors.New("xz: block header padding is not zero")
	}
	last := chain[len(chain)-1]
	if last.id != xzFilterLZMA2 || len(last.props) != 1 {
		return fmt.Errorf("%w: xz filter chain ending in filter 0x%x (only LZMA2 can end it)", ErrUnsupported, last.id)
	}
	dict, err := lzma2Dict(last.props[0])
	if err != nil {
		return err
	}
	x.dataStart = x.src.n
	var r io.Reader = x.src
	if x.compressed >= 0 {
		r = io.LimitReader(x.src, x.compressed)
	}
	r, err = lzma.Reader2Config{DictCap: dict}.NewReader2(r)
	if err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	// The filters apply in order when compressing, so decoding undoes
	// them from the last to the first.
	for i := len(chain) - 2; i >= 0; i-- {
		f := chain[i]
		var start uint32
		switch len(f.props) {
		case 0:
		case 4:
			start = binary.LittleEndian.Uint32(f.props)
		default:
			return fmt.Errorf("xz: BCJ filter 0x%x with %d bytes of properties, want 0 or 4", f.id, len(f.props))
		}
		switch f.id {
		case xzFilterX86:
			r = newBCJReader(r, &x86BCJ{pos: start})
		case xzFilterARM64:
			if start%4 != 0 {
				return fmt.Errorf("xz: ARM64 BCJ start offset %d is not a multiple of 4", start)
			}
			r = newBCJReader(r, &arm64BCJ{pos: start})
		default:
			return fmt.Errorf("%w: xz filter 0x%x (this package undoes only the x86 and ARM64 BCJ filters before LZMA2)", ErrUnsupported, f.id)
		}
	}
	x.block, x.produced = r, 0
	switch x.checkType {
	case 0x01:
		x.check = crc32.NewIEEE()
	case 0x04:
		x.check = crc64.New(crc64Table)
	case 0x0a:
		x.check = sha256.New()
	default:
		x.check = nil
	}
	return nil
}

// endBlock checks the block's sizes, skips its padding and compares its
// check.
func (x *xzReader) endBlock() error {
	x.block = nil
	dataEnd := x.src.n
	if consumed := dataEnd - x.dataStart; x.compressed >= 0 && consumed != x.compressed {
		return fmt.Errorf("xz: block holds %d compressed bytes, its header declares %d", consumed, x.compressed)
	}
	if x.uncompressed >= 0 && x.produced != x.uncompressed {
		return fmt.Errorf("xz: block yields %d bytes, its header declares %d", x.produced, x.uncompressed)
	}
	if err := x.skipPadding(x.blockStart, "block"); err != nil {
		return err
	}
	sum := make([]byte, xzCheckSize(x.checkType))
	if _, err := io.ReadFull(x.src, sum); err != nil {
		return fmt.Errorf("xz block check: %w", noEOF(err))
	}
	if x.check != nil {
		got := x.check.Sum(nil)
		if x.checkType != 0x0a {
			// CRC32 and CRC64 are stored little-endian; Sum is big-endian.
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
		}
		if !bytes.Equal(got, sum) {
			return errors.New("xz: block check mismatch: the data is corrupt")
		}
	}
	// The index records the size without the padding.
	unpadded := dataEnd - x.blockStart + int64(len(sum))
	x.records = append(x.records, [2]uint64{uint64(unpadded), uint64(x.produced)})
	return nil
}

// skipPadding reads the zero bytes that align what started at start to four
// bytes.
func (x *xzReader) skipPadding(start int64, what string) error {
	for (x.src.n-start)%4 != 0 {
		b, err := x.src.ReadByte()
		if err != nil {
			return fmt.Errorf("xz %s padding: %w", what, noEOF(err))
		}
		if b != 0 {
			return fmt.Errorf("xz: %s padding is not zero", what)
		}
	}
	return nil
}

// readIndex reads the index (its indicator byte already read) and the
// stream footer, and checks them against the blocks read: a stream cut
// anywhere, even after its last block, is an error.
func (x *xzReader) readIndex() error {
	start := x.src.n - 1
	crc := crc32.NewIEEE()
	crc.Write([]byte{0})
	readVarint := func() (uint64, error) {
		var v uint64
		for i := 0; i < 9; i++ {
			b, err := x.src.ReadByte()
			if err != nil {
				return 0, fmt.Errorf("xz index: %w", noEOF(err))
			}
			crc.Write([]byte{b})
			v |= uint64(b&0x7f) << (7 * i)
			if b&0x80 == 0 {
				if b == 0 && i > 0 {
					return 0, errors.New("xz index: non-minimal multibyte integer")
				}
				return v, nil
			}
		}
		return 0, errors.New("xz index: multibyte integer longer than 9 bytes")
	}
	count, err := readVarint()
	if err != nil {
		return err
	}
	if count != uint64(len(x.records)) {
		return fmt.Errorf("xz: the index lists %d blocks, the stream holds %d", count, len(x.records))
	}
	for _, rec := range x.records {
		unpadded, err := readVarint()
		if err != nil {
			return err
		}
		size, err := readVarint()
		if err != nil {
			return err
		}
		if unpadded != rec[0] || size != rec[1] {
			return fmt.Errorf("xz: the index records a block of %d/%d bytes, the stream holds %d/%d", unpadded, size, rec[0], rec[1])
		}
	}
	for (x.src.n-start)%4 != 0 {
		b, err := x.src.ReadByte()
		if err != nil {
			return fmt.Errorf("xz index padding: %w", noEOF(err))
		}
		if b != 0 {
			return errors.New("xz: index padding is not zero")
		}
		crc.Write([]byte{b})
	}
	indexLen := x.src.n - start + 4 // with its CRC32
	tail := make([]byte, 4+12)
	if _, err := io.ReadFull(x.src, tail); err != nil {
		return fmt.Errorf("xz index and stream footer: %w", noEOF(err))
	}
	if binary.LittleEndian.Uint32(tail) != crc.Sum32() {
		return errors.New("xz: index CRC32 mismatch")
	}
	foot := tail[4:]
	switch {
	case string(foot[10:12]) != "YZ":
		return errors.New("xz: no stream footer magic")
	case crc32.ChecksumIEEE(foot[4:10]) != binary.LittleEndian.Uint32(foot):
		return errors.New("xz: stream footer CRC32 mismatch")
	case int64(binary.LittleEndian.Uint32(foot[4:])+1)*4 != indexLen:
		return errors.New("xz: stream footer's index size does not match the index")
	case !bytes.Equal(foot[8:10], x.streamFlag):
		return errors.New("xz: stream footer's flags differ from the header's")
	}
	return nil
}

// xzCheckSize is the check field's size for a check type (section 3.1.2:
// the types come in groups of three of one size).
func xzCheckSize(t byte) int {
	if t == 0 {
		return 0
	}
	return 4 << ((t - 1) / 3)
}

// lzma2Dict decodes the LZMA2 filter's dictionary-size byte.
func lzma2Dict(p byte) (int, error) {
	if p > 40 {
		return 0, fmt.Errorf("xz: invalid LZMA2 dictionary size byte %d", p)
	}
	if p == 40 {
		return 0, fmt.Errorf("xz: LZMA2 dictionary of 4 GiB exceeds the %d MiB allowed", maxDict>>20)
	}
	size := int64(2|p&1) << (p/2 + 11)
	if size > int64(maxDict) {
		return 0, fmt.Errorf("xz: LZMA2 dictionary of %d MiB exceeds the %d MiB allowed", size>>20, maxDict>>20)
	}
	return int(max(size, lzma.MinDictCap)), nil
}

// uvarint reads an xz multibyte integer (at most 9 bytes) from *b.
func uvarint(b *[]byte) (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		if i >= len(*b) {
			return 0, errors.New("runs past the block header")
		}
		c := (*b)[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, errors.New("non-minimal multibyte integer")
			}
			*b = (*b)[i+1:]
			return v, nil
		}
	}
	return 0, errors.New("multibyte integer longer than 9 bytes")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: inside a stream, the end of
// the input is always a truncation.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
