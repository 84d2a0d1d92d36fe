package kernelimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const elfMagic = "\x7fELF"

// The Xen ELF note QEMU looks for to boot a vmlinux through its PVH entry
// (include/xen/interface/elfnote.h): name "Xen", type
// XEN_ELFNOTE_PHYS32_ENTRY, a 32- or 64-bit physical entry address.
const (
	xenNoteName       = "Xen"
	xenNotePhys32Type = 18
)

// Bounds on what parseELF reads: a vmlinux has a handful of program headers
// and a few hundred bytes of notes.
const (
	maxProgramHeaders = 256
	maxNoteSegment    = 64 << 10
)

type elfFacts struct {
	arch     Arch
	machine  uint16
	is64     bool
	pvh      bool
	pvhEntry uint64
}

// parseELF reads an ELF file's header and program headers from r (size
// bytes long) and looks through its PT_NOTE segments for the PVH entry
// note, as QEMU does.
func parseELF(r io.ReaderAt, size int64) (elfFacts, error) {
	var e elfFacts
	ident := make([]byte, 64)
	if size < 52 {
		return e, fmt.Errorf("ELF file truncated (%d bytes; an ELF header needs 52 or 64)", size)
	}
	n, err := r.ReadAt(ident, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return e, fmt.Errorf("ELF header: %w", err)
	}
	ident = ident[:n]
	if len(ident) < 52 {
		return e, fmt.Errorf("ELF header truncated (%d bytes, want 52 or 64)", len(ident))
	}
	var bo binary.ByteOrder
	switch ident[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return e, fmt.Errorf("ELF header: byte order %d is neither little (1) nor big (2) endian", ident[5])
	}
	var phoff uint64
	var phentsize, phnum uint16
	switch ident[4] {
	case 1:
		e.machine = bo.Uint16(ident[18:])
		phoff = uint64(bo.Uint32(ident[28:]))
		phentsize, phnum = bo.Uint16(ident[42:]), bo.Uint16(ident[44:])
		if phnum > 0 && phentsize != 32 {
			return e, fmt.Errorf("ELF32 program header size %d, want 32", phentsize)
		}
	case 2:
		if len(ident) < 64 {
			return e, fmt.Errorf("ELF64 header truncated (%d bytes, want 64)", len(ident))
		}
		e.is64 = true
		e.machine = bo.Uint16(ident[18:])
		phoff = bo.Uint64(ident[32:])
		phentsize, phnum = bo.Uint16(ident[54:]), bo.Uint16(ident[56:])
		if phnum > 0 && phentsize != 56 {
			return e, fmt.Errorf("ELF64 program header size %d, want 56", phentsize)
		}
	default:
		return e, fmt.Errorf("ELF header: class %d is neither 32-bit (1) nor 64-bit (2)", ident[4])
	}
	switch e.machine {
	case 62:
		e.arch = X86_64
	case 3:
		e.arch = I386
	case 183:
		e.arch = AArch64
	case 243:
		e.arch = RISCV64
	}
	if phnum == 0 {
		return e, fmt.Errorf("ELF file has no program headers; not a bootable vmlinux")
	}
	if phnum > maxProgramHeaders {
		return e, fmt.Errorf("ELF file claims %d program headers (at most %d expected)", phnum, maxProgramHeaders)
	}
	tableLen := uint64(phnum) * uint64(phentsize)
	if phoff > uint64(size) || tableLen > uint64(size)-phoff {
		return e, fmt.Errorf("ELF program headers (offset %d, %d bytes) lie outside the %d-byte file", phoff, tableLen, size)
	}
	table := make([]byte, tableLen)
	if _, err := r.ReadAt(table, int64(phoff)); err != nil {
		return e, fmt.Errorf("ELF program headers: %w", err)
	}
	for i := 0; i < int(phnum); i++ {
		ph := table[i*int(phentsize):]
		var typ uint32
		var off, filesz, align uint64
		if e.is64 {
			typ = bo.Uint32(ph[0:])
			off, filesz, align = bo.Uint64(ph[8:]), bo.Uint64(ph[32:]), bo.Uint64(ph[48:])
		} else {
			typ = bo.Uint32(ph[0:])
			off, filesz, align = uint64(bo.Uint32(ph[4:])), uint64(bo.Uint32(ph[16:])), uint64(bo.Uint32(ph[28:]))
		}
		const ptNote = 4
		if typ != ptNote || filesz == 0 {
			continue
		}
		if filesz > maxNoteSegment {
			return e, fmt.Errorf("ELF note segment %d is %d bytes (at most %d expected)", i, filesz, maxNoteSegment)
		}
		if off > uint64(size) || filesz > uint64(size)-off {
			return e, fmt.Errorf("ELF note segment %d (offset %d, %d bytes) lies outside the %d-byte file", i, off, filesz, size)
		}
		notes := make([]byte, filesz)
		if _, err := r.ReadAt(notes, int64(off)); err != nil {
			return e, fmt.Errorf("ELF note segment %d: %w", i, err)
		}
		entry, found, err := findPVHNote(notes, bo, align)
		if err != nil {
			return e, fmt.Errorf("ELF note segment %d: %w", i, err)
		}
		if found {
			e.pvh, e.pvhEntry = true, entry
		}
	}
	return e, nil
}

// findPVHNote walks the notes in seg (namesz, descsz, type, then name and
// description, each padded to align bytes: 4, or 8 for 8-aligned segments).
func findPVHNote(seg []byte, bo binary.ByteOrder, align uint64) (entry uint64, found bool, err error) {
	if align != 8 {
		align = 4
	}
	pad := func(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
	for len(seg) > 0 {
		if len(seg) < 12 {
			return 0, false, fmt.Errorf("note header truncated (%d bytes left)", len(seg))
		}
		namesz, descsz, typ := uint64(bo.Uint32(seg)), uint64(bo.Uint32(seg[4:])), bo.Uint32(seg[8:])
		rest := uint64(len(seg) - 12)
		if namesz > rest || pad(namesz) > rest || descsz > rest-pad(namesz) {
			return 0, false, fmt.Errorf("note (name %d bytes, description %d bytes) runs past its segment", namesz, descsz)
		}
		name := seg[12 : 12+namesz]
		desc := seg[12+pad(namesz) : 12+pad(namesz)+descsz]
		if typ == xenNotePhys32Type && string(trimNUL(name)) == xenNoteName {
			switch len(desc) {
			case 4:
				entry = uint64(bo.Uint32(desc))
			case 8:
				entry = bo.Uint64(desc)
			default:
				return 0, false, fmt.Errorf("Xen PVH entry note has a %d-byte description, want 4 or 8", len(desc))
			}
			found = true
		}
		next := 12 + pad(namesz) + pad(descsz)
		if next > uint64(len(seg)) {
			break // the last note's description padding may be cut
		}
		seg = seg[next:]
	}
	return entry, found, nil
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
