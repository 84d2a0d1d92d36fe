package testsystem

import "crypto/sha256"

// nixBase32Alphabet is the digit set Nix uses for hashes in store paths:
// 0-9 and a-z without e, o, u and t.
const nixBase32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// nixBase32 encodes b the way Nix prints hashes in base 32: the bits are read
// from the end of the byte string, 5 at a time, so the last byte's high bits
// end up in the first character.
func nixBase32(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	n := (len(b)*8-1)/5 + 1
	out := make([]byte, 0, n)
	for k := n - 1; k >= 0; k-- {
		bit := k * 5
		i, j := bit/8, uint(bit%8)
		v := uint(b[i]) >> j
		if i+1 < len(b) {
			v |= uint(b[i+1]) << (8 - j)
		}
		out = append(out, nixBase32Alphabet[v&0x1f])
	}
	return string(out)
}

// foldHash XOR-folds h into size bytes, as Nix does to shorten a sha256 to
// the 160 bits of a store path hash.
func foldHash(h []byte, size int) []byte {
	out := make([]byte, size)
	for i, c := range h {
		out[i%size] ^= c
	}
	return out
}

// storeHash returns the 32-character store path hash for a path called name.
// It is a sha256 over name, salt and the parts of the content, separated so
// that different splits cannot collide, folded to 20 bytes.
func storeHash(name, salt string, content ...[]byte) string {
	h := sha256.New()
	field := func(b []byte) {
		var l [8]byte
		n := uint64(len(b))
		for i := range l {
			l[i] = byte(n >> (8 * i))
		}
		h.Write(l[:])
		h.Write(b)
	}
	field([]byte("sonix-test-store-path"))
	field([]byte(name))
	field([]byte(salt))
	for _, c := range content {
		field(c)
	}
	return nixBase32(foldHash(h.Sum(nil), 20))
}
