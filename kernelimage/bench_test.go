package kernelimage

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkUncompressRealX86 extracts and decompresses the test system's
// x86_64 bzImage to its vmlinux: what a cache miss costs.
func BenchmarkUncompressRealX86(b *testing.B) {
	path := realKernel(b, "x86_64")
	dst := filepath.Join(b.TempDir(), "vmlinux")
	for i := 0; i < b.N; i++ {
		if _, _, err := Uncompress(context.Background(), path, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheHitRealX86 is what every run pays once the cache holds the
// vmlinux: inspect the image, find its content hash (index), check the
// entry's size, ELF header and PVH note, touch it.
func BenchmarkCacheHitRealX86(b *testing.B) {
	path := realKernel(b, "x86_64")
	cache := NewCache(b.TempDir(), 0)
	if p, note, err := cache.BootableELF(context.Background(), path); p == "" || err != nil {
		b.Fatal(note, err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p, note, err := cache.BootableELF(context.Background(), path); p == "" || err != nil {
			b.Fatal(note, err)
		}
	}
}

// BenchmarkCacheHitRealX86NoIndex is a hit that hashes the image, as on
// systems without a change time, or after the index lost its record.
func BenchmarkCacheHitRealX86NoIndex(b *testing.B) {
	path := realKernel(b, "x86_64")
	cache := NewCache(b.TempDir(), 0)
	if p, note, err := cache.BootableELF(context.Background(), path); p == "" || err != nil {
		b.Fatal(note, err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		os.RemoveAll(filepath.Join(cache.Dir(), "index"))
		if p, note, err := cache.BootableELF(context.Background(), path); p == "" || err != nil {
			b.Fatal(note, err)
		}
	}
}
