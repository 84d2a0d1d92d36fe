package testsystem

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestNixBase32(t *testing.T) {
	if len(nixBase32Alphabet) != 32 {
		t.Fatalf("alphabet has %d digits, want 32", len(nixBase32Alphabet))
	}
	for _, c := range "eotu" {
		if strings.ContainsRune(nixBase32Alphabet, c) {
			t.Errorf("alphabet contains %q, which Nix leaves out", c)
		}
	}
	// Known value: nix-hash --type sha256 --to-base32 of sha256("").
	empty := sha256.Sum256(nil)
	if got, want := nixBase32(empty[:]), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"; got != want {
		t.Errorf("nixBase32(sha256(\"\")) = %s, want %s", got, want)
	}
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0}, "00"},
		{[]byte{1}, "01"},
		{[]byte{31}, "0z"},
		{[]byte{32}, "10"},
		{[]byte{0xff}, "7z"},
	} {
		if got := nixBase32(tc.in); got != tc.want {
			t.Errorf("nixBase32(%x) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for n := 1; n <= 40; n++ {
		b := bytes.Repeat([]byte{0xa5}, n)
		if got, want := len(nixBase32(b)), (n*8-1)/5+1; got != want {
			t.Errorf("len(nixBase32(%d bytes)) = %d, want %d", n, got, want)
		}
	}

	h1 := storeHash("busybox", "", []byte("content"))
	if len(h1) != 32 {
		t.Fatalf("store hash %q has length %d, want 32", h1, len(h1))
	}
	for _, c := range h1 {
		if !strings.ContainsRune(nixBase32Alphabet, c) {
			t.Fatalf("store hash %q has digit %q outside the alphabet", h1, c)
		}
	}
	if h2 := storeHash("busybox", "", []byte("content")); h2 != h1 {
		t.Errorf("store hash not deterministic: %s vs %s", h1, h2)
	}
	distinct := map[string]string{"base": h1}
	for label, h := range map[string]string{
		"salt":    storeHash("busybox", "s", []byte("content")),
		"name":    storeHash("busybox2", "", []byte("content")),
		"content": storeHash("busybox", "", []byte("content2")),
		"split":   storeHash("busybox", "", []byte("con"), []byte("tent")),
	} {
		for other, oh := range distinct {
			if oh == h {
				t.Errorf("store hash for %s equals the one for %s", label, other)
			}
		}
		distinct[label] = h
	}
}

// cpioEntry is one entry read back by readCPIO.
type cpioEntry struct {
	name       string
	ino, mode  uint32
	rmaj, rmin uint32
	data       []byte
}

// readCPIO parses a newc archive strictly, checking magic and alignment.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() {
		if off%4 != 0 {
			off += 4 - off%4
		}
	}
	for {
		if off+110 > len(b) {
			t.Fatalf("cpio: truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("cpio: bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:6+8*i+8]), 16, 32)
			if err != nil {
				t.Fatalf("cpio: bad header field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		e := cpioEntry{ino: field(0), mode: field(1), rmaj: field(9), rmin: field(10)}
		size, namesize := int(field(6)), int(field(11))
		if uid, gid, mtime := field(2), field(3), field(5); uid != 0 || gid != 0 || mtime != 0 {
			t.Errorf("cpio: uid/gid/mtime %d/%d/%d, want 0", uid, gid, mtime)
		}
		off += 110
		name := b[off : off+namesize]
		if name[namesize-1] != 0 {
			t.Fatalf("cpio: name at %d not NUL-terminated", off)
		}
		e.name = string(name[:namesize-1])
		off += namesize
		align()
		e.data = b[off : off+size]
		off += size
		align()
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("cpio: %d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("bin", 0o755))
	must(w.File("bin/busybox", 0o755, []byte("#!fake busybox")))
	must(w.Symlink("bin/sh", "busybox"))
	must(w.Dir("dev", 0o755))
	must(w.CharDev("dev/console", 0o600, 5, 1))
	must(w.File("/init", 0o755, []byte("#!/bin/sh\n")))
	must(w.File("empty", 0o644, nil))
	must(w.Close())
	if err := w.File("late", 0o644, nil); err == nil {
		t.Error("write after Close succeeded")
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	got := readCPIO(t, buf.Bytes())
	want := []struct {
		name string
		mode uint32
		data string
	}{
		{"bin", syscall.S_IFDIR | 0o755, ""},
		{"bin/busybox", syscall.S_IFREG | 0o755, "#!fake busybox"},
		{"bin/sh", syscall.S_IFLNK | 0o777, "busybox"},
		{"dev", syscall.S_IFDIR | 0o755, ""},
		{"dev/console", syscall.S_IFCHR | 0o600, ""},
		{"init", syscall.S_IFREG | 0o755, "#!/bin/sh\n"},
		{"empty", syscall.S_IFREG | 0o644, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("read %d entries, want %d: %+v", len(got), len(want), got)
	}
	inos := map[uint32]bool{}
	for i, w := range want {
		g := got[i]
		if g.name != w.name || g.mode != w.mode || string(g.data) != w.data {
			t.Errorf("entry %d = %q mode %o data %q, want %q mode %o data %q", i, g.name, g.mode, g.data, w.name, w.mode, w.data)
		}
		if inos[g.ino] {
			t.Errorf("entry %q reuses inode %d", g.name, g.ino)
		}
		inos[g.ino] = true
	}
	if c := got[4]; c.rmaj != 5 || c.rmin != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.rmaj, c.rmin)
	}

	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -t: %v\n%s", err, out)
		}
		names := strings.Fields(string(out))
		if want := "bin bin/busybox bin/sh dev dev/console init empty"; strings.Join(names, " ") != want {
			t.Errorf("cpio -t lists %q, want %q", names, want)
		}
	} else {
		t.Log("cpio not installed; checked with the built-in reader only")
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolveModulesFromModulesDep(t *testing.T) {
	root := filepath.Join(t.TempDir(), "6.0.0-test")
	writeFile(t, filepath.Join(root, "modules.dep"), strings.Join([]string{
		"kernel/drivers/virtio/virtio_ring.ko:",
		"kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko:",
		"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/fs/fuse/fuse.ko:",
		"kernel/drivers/misc/pvpanic/pvpanic-mmio.ko: kernel/drivers/misc/pvpanic/pvpanic.ko",
		"kernel/drivers/misc/pvpanic/pvpanic.ko:",
		"",
	}, "\n"))
	writeFile(t, filepath.Join(root, "modules.builtin"), "kernel/drivers/block/virtio_blk.ko\n")
	mods, err := resolveModules(root, stage1Modules)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	want := "virtio_ring virtio virtio_pci_modern_dev virtio_pci fuse virtiofs pvpanic pvpanic_mmio"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("load order %q, want %q", got, want)
	}
	if mods[len(mods)-1].rel != "kernel/drivers/misc/pvpanic/pvpanic-mmio.ko" {
		t.Errorf("pvpanic-mmio path = %q", mods[len(mods)-1].rel)
	}

	for _, m := range mods {
		if len(m.when) != 1 || m.when[0] != always {
			t.Errorf("%s loaded when %q, want always", m.name, m.when)
		}
	}

	// A module loads under the conditions of the modules that need it; one
	// that an unconditional module needs loads always.
	writeFile(t, filepath.Join(root, "modules.dep"), strings.Join([]string{
		"kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko",
		"kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko",
		"kernel/net/core/failover.ko:",
		"kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko",
		"kernel/lib/crc16.ko:",
		"kernel/fs/mbcache.ko:",
		"kernel/fs/other.ko: kernel/fs/mbcache.ko",
		"",
	}, "\n"))
	mods, err = resolveModules(root, []stage1Module{
		{name: "virtio_net", when: "has_pci 1af4:1000"},
		{name: "ext4", when: "cmdline_has sonix.state"},
		{name: "crc16", when: "has_pci 1:2"},
		{name: "other"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mods {
		got = append(got, m.name+"="+strings.Join(m.when, "|"))
	}
	if want := "failover=has_pci 1af4:1000 net_failover=has_pci 1af4:1000 virtio_net=has_pci 1af4:1000 crc16=cmdline_has sonix.state|has_pci 1:2 mbcache=always ext4=cmdline_has sonix.state other=always"; strings.Join(got, " ") != want {
		t.Errorf("conditions\n%s\nwant\n%s", strings.Join(got, " "), want)
	}

	// A required module that is missing is an error.
	if _, err := resolveModules(root, []stage1Module{{name: "virtio_missing", required: true}}); err == nil {
		t.Error("missing required module: no error")
	}
	// A missing dependency is an error too.
	writeFile(t, filepath.Join(root, "modules.dep"), "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko\n")
	if _, err := resolveModules(root, []stage1Module{{name: "virtiofs", required: true}}); err == nil || !strings.Contains(err.Error(), "fuse") {
		t.Errorf("missing dependency: err = %v, want one naming fuse", err)
	}
}

func TestScriptsParse(t *testing.T) {
	sh := "/bin/busybox"
	if _, err := os.Stat(sh); err != nil {
		t.Skip("no /bin/busybox to syntax-check the scripts with")
	}
	for name, script := range map[string]string{
		"stage1": stage1Script("6.1.0-test", []stage1Load{{path: "/lib/modules/v/kernel/a.ko"}, {path: "/lib/modules/v/kernel/b b.ko.xz", when: []string{"has_pci 1af4:1000", "cmdline_has x"}}}),
		"stage2": stage2Script("/nix/store/00000000000000000000000000000000-busybox/bin", "/nix/store/00000000000000000000000000000000-sonix-run-agent/bin/sonix-run-agent"),
	} {
		cmd := exec.Command(sh, "sh", "-n")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s does not parse: %v\n%s", name, err, out)
		}
	}
}

func TestBuild(t *testing.T) {
	in, err := FindInputs("x86_64")
	if err != nil {
		t.Skipf("test inputs not available (%v)", err)
	}
	dir := t.TempDir()
	sys, err := Build(dir, in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sys.Dir != dir || sys.StoreDir != filepath.Join(dir, "store") || sys.ModulesDir != in.ModulesDir || sys.KernelVersion != in.KernelVersion {
		t.Errorf("System = %+v", sys)
	}
	if st, err := os.Stat(filepath.Join(sys.ModulesDir, sys.KernelVersion)); err != nil || !st.IsDir() {
		t.Errorf("ModulesDir %s has no %s/: %v", sys.ModulesDir, sys.KernelVersion, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "result")); err != nil || target != sys.Toplevel {
		t.Errorf("result -> %q (%v), want %q", target, err, sys.Toplevel)
	}
	if sys.BootJSON != filepath.Join(sys.Toplevel, "boot.json") {
		t.Errorf("BootJSON = %s", sys.BootJSON)
	}

	// Store paths: <32 base32 chars>-name, exactly four of them.
	ents, err := os.ReadDir(sys.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, e := range ents {
		h, name, ok := strings.Cut(e.Name(), "-")
		if !ok || len(h) != 32 || strings.Trim(h, nixBase32Alphabet) != "" {
			t.Errorf("store entry %q is not <hash>-<name>", e.Name())
		}
		byName[name] = e.Name()
	}
	kname := "linux-" + in.KernelVersion
	for _, n := range []string{"busybox", kname, "initrd-sonix-test", "sonix-run-agent", "sonix-test-system"} {
		if byName[n] == "" {
			t.Errorf("no store path named %s in %v", n, ents)
		}
	}
	if len(ents) != 5 {
		t.Errorf("store has %d entries, want 5", len(ents))
	}
	if t.Failed() {
		t.FailNow()
	}
	guest := func(name string) string { return "/nix/store/" + byName[name] }
	host := func(guestPath string) string {
		return filepath.Join(sys.StoreDir, strings.TrimPrefix(guestPath, "/nix/store/"))
	}
	if sys.Toplevel != host(guest("sonix-test-system")) {
		t.Errorf("Toplevel = %s", sys.Toplevel)
	}

	// busybox and applets
	bb := filepath.Join(sys.StoreDir, byName["busybox"], "bin")
	if st, err := os.Lstat(filepath.Join(bb, "busybox")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		t.Errorf("busybox binary: %v %v", st, err)
	}
	for _, a := range []string{"sh", "mount", "cat", "poweroff", "reboot", "switch_root", "insmod", "uname", "sleep"} {
		if target, err := os.Readlink(filepath.Join(bb, a)); err != nil || target != "busybox" {
			t.Errorf("applet %s -> %q (%v), want busybox", a, target, err)
		}
	}

	// kernel
	kfile := filepath.Join(sys.StoreDir, byName[kname], "bzImage")
	kst, err := os.Stat(kfile)
	ist, err2 := os.Stat(in.Kernel)
	if err != nil || err2 != nil || kst.Size() != ist.Size() {
		t.Errorf("kernel in store: %v %v, sizes differ", err, err2)
	}

	// toplevel
	init := filepath.Join(sys.Toplevel, "init")
	st, err := os.Lstat(init)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("init is not a regular executable: %v %v", st, err)
	}
	initText, _ := os.ReadFile(init)
	wantShebang := "#!" + guest("busybox") + "/bin/sh\n"
	if !strings.HasPrefix(string(initText), wantShebang) {
		t.Errorf("init starts %q, want %q", strings.SplitN(string(initText), "\n", 2)[0], wantShebang)
	}
	for _, l := range []string{"sonix-test: root-fstype=", "sonix-test: store-fstype=", "store-mode=", "sonix-test: modules=", "sonix-test: arch=", "sonix-test: cmdline=", "poweroff -f", "/proc/sysrq-trigger", "reboot -f"} {
		if !strings.Contains(string(initText), l) {
			t.Errorf("init lacks %q", l)
		}
	}
	wantLinks := map[string]string{
		"kernel": guest(kname) + "/bzImage",
		"initrd": guest("initrd-sonix-test") + "/initrd",
	}
	for n, want := range wantLinks {
		if target, err := os.Readlink(filepath.Join(sys.Toplevel, n)); err != nil || target != want {
			t.Errorf("%s -> %q (%v), want %q", n, target, err, want)
		}
	}

	// boot.json
	raw, err := os.ReadFile(sys.BootJSON)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var v1 bootspec
	if err := json.Unmarshal(doc["org.nixos.bootspec.v1"], &v1); err != nil {
		t.Fatalf("org.nixos.bootspec.v1: %v", err)
	}
	wantV1 := bootspec{
		Init:         guest("sonix-test-system") + "/init",
		Initrd:       wantLinks["initrd"],
		Kernel:       wantLinks["kernel"],
		KernelParams: []string{"loglevel=4"},
		Label:        "sonix-run test system (Linux " + in.KernelVersion + ")",
		System:       "x86_64-linux",
		Toplevel:     guest("sonix-test-system"),
	}
	if fmt.Sprint(v1) != fmt.Sprint(wantV1) {
		t.Errorf("bootspec v1 = %+v\nwant %+v", v1, wantV1)
	}
	for _, p := range []string{v1.Init, v1.Initrd, v1.Kernel, v1.Toplevel} {
		if _, err := os.Stat(host(p)); err != nil {
			t.Errorf("bootspec path %s is not in the store: %v", p, err)
		}
	}
	var specs map[string]map[string]json.RawMessage
	if err := json.Unmarshal(doc["org.nixos.specialisation.v1"], &specs); err != nil {
		t.Fatalf("org.nixos.specialisation.v1: %v", err)
	}
	var shell bootspec
	if err := json.Unmarshal(specs["shell"]["org.nixos.bootspec.v1"], &shell); err != nil {
		t.Fatalf("specialisation shell: %v", err)
	}
	wantShell := wantV1
	wantShell.KernelParams = []string{"loglevel=4", "sonix.test=shell"}
	if fmt.Sprint(shell) != fmt.Sprint(wantShell) {
		t.Errorf("shell specialisation = %+v\nwant %+v", shell, wantShell)
	}

	// initrd: gzip'd newc with /init, busybox and the virtio modules.
	irData, err := os.ReadFile(host(v1.Initrd))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(irData))
	if err != nil {
		t.Fatal(err)
	}
	cpioData, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]cpioEntry{}
	for _, e := range readCPIO(t, cpioData) {
		entries[e.name] = e
	}
	if e, ok := entries["init"]; !ok || e.mode != syscall.S_IFREG|0o755 || !strings.HasPrefix(string(e.data), "#!/bin/sh\n") {
		t.Errorf("initrd /init missing or wrong: mode %o", e.mode)
	}
	if e := entries["dev/console"]; e.mode != syscall.S_IFCHR|0o600 || e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("initrd /dev/console wrong: %+v", e)
	}
	if e := entries["bin/sh"]; e.mode&syscall.S_IFMT != syscall.S_IFLNK || string(e.data) != "busybox" {
		t.Errorf("initrd /bin/sh wrong: %+v", e)
	}
	var kos []string
	for n := range entries {
		if strings.HasSuffix(n, ".ko") {
			kos = append(kos, filepath.Base(n))
		}
	}
	sort.Strings(kos)
	stage1 := string(entries["init"].data)
	for _, m := range []string{"virtio.ko", "virtio_ring.ko", "virtio_pci.ko", "fuse.ko", "virtiofs.ko"} {
		found := false
		for _, k := range kos {
			found = found || k == m
		}
		if !found {
			// It may be built in; then no insmod line either.
			if strings.Contains(stage1, "/"+m+"\n") {
				t.Errorf("stage 1 loads %s but the initrd lacks it", m)
			}
			continue
		}
		if !strings.Contains(stage1, "/"+m+"\n") {
			t.Errorf("initrd has %s but stage 1 does not load it", m)
		}
	}
	t.Logf("initrd: %d bytes, modules %v", len(irData), kos)
	// Dependencies before dependants.
	if i, j := strings.Index(stage1, "/virtio_ring.ko"), strings.Index(stage1, "/virtiofs.ko"); i >= 0 && j >= 0 && i > j {
		t.Error("stage 1 loads virtiofs before virtio_ring")
	}
	if i, j := strings.Index(stage1, "/fuse.ko"), strings.Index(stage1, "/virtiofs.ko"); i >= 0 && j >= 0 && i > j {
		t.Error("stage 1 loads virtiofs before fuse")
	}

	// Same inputs, no salt: the same store paths. A salt: all new ones.
	dir2 := t.TempDir()
	sys2, err := Build(dir2, in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(sys2.Toplevel) != filepath.Base(sys.Toplevel) {
		t.Errorf("unsalted builds differ: %s vs %s", sys2.Toplevel, sys.Toplevel)
	}
	raw2, _ := os.ReadFile(sys2.BootJSON)
	if !bytes.Equal(raw, raw2) {
		t.Error("unsalted builds have different boot.json")
	}
	sys3, err := Build(dir2, in, Options{Salt: "x", KernelParams: []string{"quiet"}})
	if err != nil {
		t.Fatal(err)
	}
	ents3, _ := os.ReadDir(sys3.StoreDir)
	if len(ents3) != 10 {
		t.Errorf("salted build into the same dir: %d store entries, want 10 (5 old + 5 new)", len(ents3))
	}
	if target, _ := os.Readlink(filepath.Join(dir2, "result")); target != sys3.Toplevel {
		t.Errorf("result not updated to the salted build: %s", target)
	}
	raw3, _ := os.ReadFile(sys3.BootJSON)
	if !strings.Contains(string(raw3), `"quiet"`) || strings.Contains(string(raw3), "loglevel=4") {
		t.Errorf("KernelParams not used:\n%s", raw3)
	}
}

func TestFindInputsUnsupportedArch(t *testing.T) {
	if _, err := FindInputs("mips"); err == nil {
		t.Error("FindInputs(mips) succeeded")
	}
}

func TestFindInputsMissing(t *testing.T) {
	t.Setenv("SONIX_TEST_CACHE", t.TempDir())
	_, err := FindInputs("x86_64")
	if err == nil || !strings.Contains(err.Error(), "scripts/install-test-deps") {
		t.Errorf("FindInputs with an empty cache: err = %v, want one pointing at scripts/install-test-deps", err)
	}
}
