package kernelimage

// Synthetic kernel images, built the way the kernel's build lays them out,
// small enough to make by the dozen.

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

const testRelease = "6.9.0-test+"

func testBanner(release string) string {
	return "Linux version " + release + " (builder@example.org) (gcc (GCC) 13.2.0, GNU ld 2.41) #1 SMP PREEMPT_DYNAMIC\n"
}

type elfSpec struct {
	class64  bool
	machine  uint16 // 62 x86_64, 3 i386
	pvh      bool
	pvhDesc  int // 4 or 8 bytes of entry address
	release  string
	bodySize int
	seed     uint64
}

// x86Body is code-like filler: text, random bytes, and E8/E9 opcodes
// followed by displacements with 0x00 or 0xFF top bytes, which the x86 BCJ
// filter converts.
func x86Body(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 0, n)
	for len(b) < n {
		switch r.IntN(4) {
		case 0:
			b = append(b, "mov %rdi, %rsi; call do_something_useful; "...)
		case 1:
			op := byte(0xe8 + r.IntN(2))
			disp := uint32(r.IntN(1 << 20))
			if r.IntN(2) == 0 {
				disp = -disp
			}
			b = append(b, op)
			b = binary.LittleEndian.AppendUint32(b, disp)
		case 2:
			// Opcodes packed close together exercise the filter's mask.
			for i := 0; i < 6; i++ {
				b = append(b, byte(0xe8+r.IntN(2)), byte(r.IntN(256)))
			}
			b = append(b, 0x00, 0xff, 0xe8, 0xff)
		default:
			for i := 0; i < 16; i++ {
				b = append(b, byte(r.IntN(256)))
			}
		}
	}
	return b[:n]
}

// makeELF lays out an ELF vmlinux: header, a PT_LOAD and a PT_NOTE program
// header, Xen notes (the PVH entry among them when spec.pvh), the banner,
// then code-like filler.
func makeELF(s elfSpec) []byte {
	le := binary.LittleEndian
	var notes []byte
	addNote := func(name string, typ uint32, desc []byte) {
		nm := append([]byte(name), 0)
		notes = le.AppendUint32(notes, uint32(len(nm)))
		notes = le.AppendUint32(notes, uint32(len(desc)))
		notes = le.AppendUint32(notes, typ)
		notes = append(notes, nm...)
		for len(notes)%4 != 0 {
			notes = append(notes, 0)
		}
		notes = append(notes, desc...)
		for len(notes)%4 != 0 {
			notes = append(notes, 0)
		}
	}
	addNote("Xen", 6, []byte("linux\x00"))
	addNote("GNU", 3, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	if s.pvh {
		desc := make([]byte, s.pvhDesc)
		if s.pvhDesc == 8 {
			le.PutUint64(desc, 0x1000850)
		} else {
			le.PutUint32(desc, 0x1000850)
		}
		addNote("Xen", xenNotePhys32Type, desc)
	}
	addNote("Xen", 17, []byte{1, 0x88, 0, 0})

	ehsize, phentsize := 52, 32
	if s.class64 {
		ehsize, phentsize = 64, 56
	}
	noteOff := ehsize + 2*phentsize
	body := append([]byte(testBanner(s.release)), x86Body(s.bodySize, s.seed)...)
	total := noteOff + len(notes) + len(body)

	h := make([]byte, ehsize)
	copy(h, elfMagic)
	h[5], h[6] = 1, 1
	le.PutUint16(h[16:], 2) // ET_EXEC
	le.PutUint16(h[18:], s.machine)
	le.PutUint32(h[20:], 1)
	ph := func(typ uint32, off, size uint64, align uint64) []byte {
		p := make([]byte, phentsize)
		le.PutUint32(p, typ)
		if s.class64 {
			le.PutUint64(p[8:], off)
			le.PutUint64(p[16:], 0xffffffff81000000+off)
			le.PutUint64(p[24:], 0x1000000+off)
			le.PutUint64(p[32:], size)
			le.PutUint64(p[40:], size)
			le.PutUint64(p[48:], align)
		} else {
			le.PutUint32(p[4:], uint32(off))
			le.PutUint32(p[8:], 0xc1000000+uint32(off))
			le.PutUint32(p[12:], 0x1000000+uint32(off))
			le.PutUint32(p[16:], uint32(size))
			le.PutUint32(p[20:], uint32(size))
			le.PutUint32(p[28:], uint32(align))
		}
		return p
	}
	if s.class64 {
		h[4] = 2
		le.PutUint64(h[24:], 0x1000000)
		le.PutUint64(h[32:], uint64(ehsize)) // phoff
		le.PutUint16(h[52:], uint16(ehsize))
		le.PutUint16(h[54:], uint16(phentsize))
		le.PutUint16(h[56:], 2)
	} else {
		h[4] = 1
		le.PutUint32(h[24:], 0x1000000)
		le.PutUint32(h[28:], uint32(ehsize))
		le.PutUint16(h[40:], uint16(ehsize))
		le.PutUint16(h[42:], uint16(phentsize))
		le.PutUint16(h[44:], 2)
	}
	out := append(h, ph(1, 0, uint64(total), 0x200000)...)
	out = append(out, ph(4, uint64(noteOff), uint64(len(notes)), 4)...)
	out = append(out, notes...)
	return append(out, body...)
}

func testELF(pvh bool) []byte {
	return makeELF(elfSpec{class64: true, machine: 62, pvh: pvh, pvhDesc: 8, release: testRelease, bodySize: 200 << 10, seed: 7})
}

// makeArm64Image lays out an arm64 Image: the 64-byte header, the banner,
// then words among which BL and ADRP instructions, which the ARM64 BCJ
// filter converts.
func makeArm64Image(size int, seed uint64) []byte {
	le := binary.LittleEndian
	r := rand.New(rand.NewPCG(seed, 2))
	img := make([]byte, imageHeaderLen)
	le.PutUint32(img[0:], 0xfa405a4d) // "MZ" and a branch, as the EFI stub has
	le.PutUint64(img[16:], uint64(size))
	le.PutUint64(img[24:], 0x0a)
	copy(img[0x38:], "ARM\x64")
	img = append(img, testBanner(testRelease)...)
	for len(img)%4 != 0 {
		img = append(img, 0)
	}
	for len(img) < size {
		var w uint32
		switch r.IntN(5) {
		case 0:
			w = 0x94000000 | uint32(r.IntN(1<<26)) // BL
		case 1:
			// ADRP x(n), with an immediate inside ±512 MiB (or not).
			imm := uint32(r.IntN(1 << 18))
			if r.IntN(4) == 0 {
				imm = uint32(r.IntN(1 << 21))
			}
			w = 0x90000000 | (imm&3)<<29 | (imm>>2)<<5 | uint32(r.IntN(32))
		case 2:
			w = 0xd503201f // NOP
		default:
			w = r.Uint32()
		}
		img = le.AppendUint32(img, w)
	}
	return img[:size]
}

// compressWith compresses data as the kernel's build does (scripts/
// Makefile.lib), without the appended length.
func compressWith(t testing.TB, c Compression, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case Gzip:
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		w.Write(data)
		w.Close()
	case Xz:
		return makeXZ(t, data, xzFilterX86)
	case Zstd:
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(true))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case Lzma:
		// As `lzma -9` from a pipe: no size in the header, an end marker.
		w, err := lzma.WriterConfig{DictCap: 8 << 20, EOSMarker: true}.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case Lz4:
		w := lz4.NewWriter(&buf)
		if err := w.Apply(lz4.LegacyOption(true)); err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case Bzip2:
		// Go has no bzip2 encoder: use the tool when there is one.
		return runTool(t, data, "bzip2", "-9", "-c")
	default:
		t.Fatalf("no compressor for %s", c)
	}
	return buf.Bytes()
}

// runTool pipes data through a compression tool, skipping the test when the
// tool is missing.
func runTool(t testing.TB, data []byte, name string, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.Bytes())
	}
	return out
}

// makeXZ writes an .xz stream of one block: filter bcj (0 for none) then
// LZMA2, CRC32 check, index and footer, as xz_wrap.sh's `xz --check=crc32
// --x86 --lzma2=...` does.
func makeXZ(t testing.TB, data []byte, bcj uint64) []byte {
	t.Helper()
	le := binary.LittleEndian
	filtered := append([]byte(nil), data...)
	switch bcj {
	case xzFilterX86:
		(&x86BCJ{}).code(filtered, true)
	case xzFilterARM64:
		(&arm64BCJ{}).code(filtered, true)
	}
	var lz bytes.Buffer
	w, err := lzma.Writer2Config{DictCap: 64 << 10}.NewWriter2(&lz)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(filtered)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	out := append([]byte(nil), xzMagic...)
	flags := []byte{0, 0x01} // CRC32
	out = append(out, flags...)
	out = le.AppendUint32(out, crc32.ChecksumIEEE(flags))

	// Block header: size byte, flags, filters, padding, CRC32.
	bh := []byte{0, 0}
	if bcj != 0 {
		bh[1] = 1 // two filters
		bh = append(bh, byte(bcj), 0)
	}
	bh = append(bh, xzFilterLZMA2, 1, 8) // dictionary 64 KiB: 2 << (8/2 + 11)
	for (len(bh)+4)%4 != 0 {
		bh = append(bh, 0)
	}
	bh[0] = byte((len(bh)+4)/4 - 1)
	bh = le.AppendUint32(bh, crc32.ChecksumIEEE(bh))
	blockStart := len(out)
	out = append(out, bh...)
	out = append(out, lz.Bytes()...)
	unpadded := len(out) - blockStart
	for (len(out)-blockStart)%4 != 0 {
		out = append(out, 0)
	}
	out = le.AppendUint32(out, crc32.ChecksumIEEE(data))
	unpadded += 4

	// Index: indicator, one record (unpadded size, uncompressed size).
	idx := []byte{0, 1}
	idx = appendUvarint(idx, uint64(unpadded))
	idx = appendUvarint(idx, uint64(len(data)))
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = le.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	out = append(out, idx...)
	foot := le.AppendUint32(nil, uint32(len(idx)/4-1))
	foot = append(foot, flags...)
	out = le.AppendUint32(out, crc32.ChecksumIEEE(foot))
	out = append(out, foot...)
	return append(out, 'Y', 'Z')
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// kernelPayload is a compressed stream as a bzImage carries it: every
// compression but gzip gets the uncompressed length appended.
func kernelPayload(c Compression, stream []byte, uncompressedLen int) []byte {
	p := append([]byte(nil), stream...)
	if c != Gzip {
		p = binary.LittleEndian.AppendUint32(p, uint32(uncompressedLen))
	}
	return p
}

// makeBzImage lays out a bzImage: a boot sector and three setup sectors
// holding the setup header (boot protocol 2.15, 64-bit) and the version
// string, then the protected-mode code with the payload 0x100 bytes in.
func makeBzImage(payload []byte, release string) []byte {
	le := binary.LittleEndian
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[setupSectsOff] = setupSects
	le.PutUint16(img[bootFlagOff:], 0xaa55)
	img[0x200], img[0x201] = 0xeb, 0x66 // the jump over the header
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[versionOff:], 0x020f)
	if release != "" {
		copy(img[0x400:], release+" (builder@example.org) #1 SMP PREEMPT_DYNAMIC\x00")
		le.PutUint16(img[kernelVersionOff:], 0x400-0x200)
	}
	img[xloadflagsOff] = xlfKernel64
	le.PutUint32(img[payloadOffsetOff:], 0x100)
	le.PutUint32(img[payloadLengthOff:], uint32(len(payload)))
	pm := make([]byte, 0x100) // the self-decompressor's code
	for i := range pm {
		pm[i] = 0x90
	}
	img = append(img, pm...)
	img = append(img, payload...)
	return append(img, make([]byte, 64)...) // the rest of the decompressor
}

// testBzImage is a bzImage of testELF(pvh) compressed with c.
func testBzImage(t testing.TB, c Compression, pvh bool) (image, vmlinux []byte) {
	t.Helper()
	vmlinux = testELF(pvh)
	return makeBzImage(kernelPayload(c, compressWith(t, c, vmlinux), len(vmlinux)), testRelease), vmlinux
}

// makeZboot lays out an EFI zboot image: "MZ", "zimg", the payload's
// offset and size, the compression's name, a PE header naming machine, and
// the payload (whose size excludes any appended length).
func makeZboot(stream []byte, compName string, machine uint16) []byte {
	le := binary.LittleEndian
	img := make([]byte, 0x200)
	copy(img, "MZ")
	copy(img[4:], "zimg")
	le.PutUint32(img[8:], 0x200)
	le.PutUint32(img[12:], uint32(len(stream)))
	copy(img[zbootTypeOff:], compName)
	le.PutUint32(img[peOffsetOff:], 0x40)
	copy(img[0x40:], "PE\x00\x00")
	le.PutUint16(img[0x44:], machine)
	img = append(img, stream...)
	return append(img, 0, 0, 0, 0) // the appended length, outside the payload
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// realKernel returns the path of a test kernel that scripts/install-test-deps
// puts under ~/.cache/sonix-run, or skips.
func realKernel(t testing.TB, arch string) string {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skipf("no home directory: %v", err)
	}
	m, _ := filepath.Glob(filepath.Join(home, ".cache", "sonix-run", "kernel", arch, "boot", "vmlinuz-*"))
	if len(m) == 0 {
		t.Skipf("no %s test kernel under ~/.cache/sonix-run/kernel (scripts/install-test-deps installs one)", arch)
	}
	return m[0]
}
