package kconfig

import (
	"bytes"
	"compress/gzip"
	"errors"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	in := "#\n# Automatically generated file; DO NOT EDIT.\n#\n" +
		"CONFIG_CC_VERSION_TEXT=\"gcc (Debian 12.2.0-14) 12.2.0\"\n" +
		"CONFIG_VIRTIO_PCI=m\r\n" +
		"CONFIG_TMPFS=y\n" +
		"# CONFIG_VT is not set\n" +
		"CONFIG_NR_CPUS=64\n" +
		"CONFIG_PHYSICAL_START=0x1000000\n" +
		"CONFIG_CMDLINE=\"a \\\"quoted\\\" \\\\ word\"\n" +
		"CONFIG_LOCALVERSION=\"\"\n" +
		"\n   \n" +
		"CONFIG_TMPFS=m\n" // later wins, as in Kconfig
	c, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		"CC_VERSION_TEXT": `"gcc (Debian 12.2.0-14) 12.2.0"`,
		"VIRTIO_PCI":      "m",
		"TMPFS":           "m",
		"VT":              "n",
		"NR_CPUS":         "64",
		"PHYSICAL_START":  "0x1000000",
		"CMDLINE":         `"a \"quoted\" \\ word"`,
		"LOCALVERSION":    `""`,
	}
	if len(c) != len(want) {
		t.Errorf("got %d options, want %d: %v", len(c), len(want), c)
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("CONFIG_%s = %q, want %q", k, c[k], v)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"CONFIG_A=y\nthis is not a config\n", "line 2"},
		{"VIRTIO_PCI=y\n", "not a CONFIG_ option name"},
		{"CONFIG_=y\n", "not a CONFIG_ option name"},
		{"CONFIG_A B=y\n", "not a CONFIG_ option name"},
		{"CONFIG_A=\n", "empty value"},
		{"CONFIG_A=\"open\n", "unterminated string"},
		{"CONFIG_A=\"a\"b\"\n", "unescaped quote"},
		{"CONFIG_A=\"a\\\"\n", "lone backslash"},
		{"CONFIG_A=y m\n", "neither a word"},
		{"CONFIG_A=$(shell rm -rf /)\n", "neither a word"},
		{"# CONFIG_A-B is not set\n", "bad option name"},
		{strings.Repeat("#", maxConfigSize+1), "more than"},
	} {
		_, err := ParseConfig([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q): error %v, want one containing %q", clip(tc.in), err, tc.want)
		}
	}
}

// image builds a fake uncompressed kernel image with config embedded the way
// kernel/configs.c does it, plus decoys before it.
func image(t testing.TB, config string) []byte {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(config))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	img.Write(bytes.Repeat([]byte{0x90}, 4096))
	img.WriteString("code mentioning IKCFG_ST without the gzip magic\x00")
	img.WriteString("IKCFG_ST")
	img.Write(gz.Bytes())
	img.WriteString("IKCFG_ED")
	img.Write(bytes.Repeat([]byte{0xcc}, 4096))
	return img.Bytes()
}

func TestEmbeddedConfig(t *testing.T) {
	const cfg = "CONFIG_VIRTIO_PCI=y\n# CONFIG_VT is not set\n"
	got, err := EmbeddedConfig(image(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != cfg {
		t.Errorf("got %q, want %q", got, cfg)
	}
	k, err := FromImage(image(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if k.Config["VIRTIO_PCI"] != "y" || k.Config["VT"] != "n" || k.Source != "its embedded config" {
		t.Errorf("FromImage: %+v", k)
	}

	if _, err := EmbeddedConfig(bytes.Repeat([]byte("IKCFG_S"), 1000)); !errors.Is(err, ErrNoEmbeddedConfig) {
		t.Errorf("image without a config: %v, want ErrNoEmbeddedConfig", err)
	}
	// A damaged blob is an error, not "no config".
	img := image(t, cfg)
	i := bytes.Index(img, ikconfigStart) + len(ikconfigStart) + 20
	img[i] ^= 0xff
	if _, err := EmbeddedConfig(img); err == nil || errors.Is(err, ErrNoEmbeddedConfig) {
		t.Errorf("damaged blob: %v, want a decompression error", err)
	}
	// A gzip bomb stops at the limit.
	bomb := image(t, strings.Repeat("#", maxConfigSize+10))
	if _, err := EmbeddedConfig(bomb); err == nil || !strings.Contains(err.Error(), "inflates past") {
		t.Errorf("bomb: %v, want the size limit", err)
	}
	// Garbage inside the embedded config is reported as such.
	if _, err := FromImage(image(t, "CONFIG_A=y\n<html>\n")); err == nil || !strings.Contains(err.Error(), "embedded config: kconfig: line 2") {
		t.Errorf("bad embedded config: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"x \\\" y\"\nCONFIG_N=0x10\n"))
	f.Add([]byte("# comment\n\n\r\nCONFIG_A=m\r\n"))
	for _, arch := range Arches {
		text, _ := Fragment(arch)
		f.Add([]byte(text))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		for name, value := range c {
			if !validName(name) {
				t.Fatalf("accepted bad name %q", name)
			}
			if value == "" || strings.ContainsAny(value, "\n\r") {
				t.Fatalf("CONFIG_%s: accepted value %q", name, value)
			}
		}
		// What parses can be checked without panicking.
		if _, err := Check(x86_64, &Kernel{Source: "fuzz", Config: c}); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzEmbeddedConfig(f *testing.F) {
	f.Add(image(f, "CONFIG_A=y\n"))
	f.Add([]byte("IKCFG_ST\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03IKCFG_ED"))
	f.Add([]byte("no config here"))
	f.Fuzz(func(t *testing.T, img []byte) {
		data, err := EmbeddedConfig(img)
		if err == nil && len(data) > maxConfigSize {
			t.Fatalf("returned %d bytes, over the limit", len(data))
		}
		if err == nil {
			ParseConfig(data)
		}
	})
}

func FuzzModuleList(f *testing.F) {
	f.Add([]byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n"))
	f.Add([]byte("drivers/virtio/virtio_pci.o\n\n"))
	f.Add([]byte("kernel/fs/fuse/fuse.ko.zst\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		names, err := moduleList(data)
		if err != nil {
			return
		}
		for n := range names {
			if n == "" || strings.ContainsAny(n, "-/\n") {
				t.Fatalf("accepted module name %q", n)
			}
		}
	})
}
