package kernelimage

import (
	"bytes"
	"io"
	"testing"
)

// FuzzInspect feeds arbitrary files to the header parsers: an answer or an
// error, never a panic or an allocation beyond the bounds.
func FuzzInspect(f *testing.F) {
	bz, _ := testBzImage(f, Gzip, true)
	f.Add(bz[:4*512+0x100+64])
	f.Add(makeELF(elfSpec{class64: true, machine: 62, pvh: true, pvhDesc: 8, release: testRelease, bodySize: 64}))
	f.Add(makeELF(elfSpec{machine: 3, pvh: true, pvhDesc: 4, release: testRelease, bodySize: 64}))
	f.Add(makeArm64Image(256, 1))
	f.Add(makeZboot(compressWith(f, Gzip, makeArm64Image(256, 1)), "gzip", 0xaa64))
	f.Add(compressWith(f, Gzip, makeArm64Image(256, 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := inspect(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if info.Format == "" || info.Compression == "" {
			t.Fatalf("inspect succeeded with %+v", info)
		}
		if info.PayloadOffset < 0 || info.PayloadOffset+info.PayloadLength > int64(len(data)) {
			t.Fatalf("payload %d+%d outside %d bytes", info.PayloadOffset, info.PayloadLength, len(data))
		}
		if r, err := scanRelease(bytes.NewReader(data)); err != nil || (r != "" && !validRelease(r)) {
			t.Fatalf("scanRelease = %q, %v", r, err)
		}
	})
}

// FuzzParseELF feeds arbitrary ELF headers, program headers and notes.
func FuzzParseELF(f *testing.F) {
	f.Add(makeELF(elfSpec{class64: true, machine: 62, pvh: true, pvhDesc: 8, release: testRelease, bodySize: 16}))
	f.Add(makeELF(elfSpec{class64: true, machine: 62, release: testRelease, bodySize: 16}))
	f.Add(makeELF(elfSpec{machine: 3, pvh: true, pvhDesc: 4, release: testRelease, bodySize: 16}))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseELF(bytes.NewReader(data), int64(len(data)))
		if err == nil && e.pvh && e.pvhEntry == 0 && !bytes.Contains(data, []byte("Xen")) {
			t.Fatalf("PVH note found in data without \"Xen\"")
		}
	})
}

// FuzzXZ feeds arbitrary streams to the .xz container reader, which this
// package writes itself; the output read is bounded.
func FuzzXZ(f *testing.F) {
	saved := maxDict
	maxDict = 64 << 10 // the decoder allocates its dictionary up front
	f.Cleanup(func() { maxDict = saved })
	elf := makeELF(elfSpec{class64: true, machine: 62, pvh: true, pvhDesc: 8, release: testRelease, bodySize: 2000})
	f.Add(makeXZ(f, elf, xzFilterX86))
	f.Add(makeXZ(f, elf, 0))
	f.Add(makeXZ(f, makeArm64Image(2048, 1), xzFilterARM64))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := newXZReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		// A little output is enough to reach every branch; more only
		// slows the instrumented decoder.
		io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	})
}

// FuzzBCJ checks that the BCJ filters undo themselves on any data, fed in
// pieces of any size.
func FuzzBCJ(f *testing.F) {
	f.Add(x86Body(512, 1), uint8(7))
	f.Add(makeArm64Image(512, 1), uint8(4))
	f.Add([]byte{0xe8, 0xe8, 0xe8, 0x00, 0xff, 0xe9, 0x00, 0x00, 0x00, 0x00, 0xe8}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		for _, mk := range []func() bcjCoder{func() bcjCoder { return &x86BCJ{} }, func() bcjCoder { return &arm64BCJ{} }} {
			enc := append([]byte(nil), data...)
			mk().code(enc, true)
			got, err := io.ReadAll(newBCJReader(&chunkReader{b: enc, n: int(chunk%64) + 1}, mk()))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%T: decode(encode(data)) differs from data", mk())
			}
		}
	})
}
