package vlan

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sonix-run/sonix-run/examples/testsystem"
)

// The modules a virtio NIC needs in the test kernel, in load order.
var nicModules = []string{
	"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci.ko", "net/core/failover.ko", "drivers/net/net_failover.ko",
	"drivers/net/virtio_net.ko",
}

// The guest's init: load the NIC, take the address from the kernel command
// line (vlanip=, passed to init as an environment variable), then run the
// console's lines as commands, each followed by its exit status.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in /lib/nic/*.ko; do insmod "$m" || echo "insmod $m failed"; done
ip link set lo up
ip addr add "$vlanip/24" dev eth0
ip link set eth0 up
stty -echo
echo VLAN-READY
while read -r line; do eval "$line"; echo "VLAN-DONE $?"; done
`

// guest is one QEMU with the initramfs above, driven over its console.
type guest struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	log   bytes.Buffer // the console, for failure messages; only read after lines closed
	done  chan struct{}
}

func startGuest(t *testing.T, name, kernel, initrd, ip string, port *Port) *guest {
	t.Helper()
	// What the QEMU backend's argv gives a VM on a LAN (qemu/argv.go).
	nic := []string{
		"-netdev", "stream,id=vlan0,server=off,addr.type=unix,addr.path=" + strings.ReplaceAll(port.Socket, ",", ",,"),
		"-device", "virtio-net-pci,netdev=vlan0,mac=" + port.MAC.String() + ",romfile=",
	}
	args := append([]string{
		"-machine", "q35,accel=tcg", "-cpu", "max", "-m", "256M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-chardev", "stdio,id=con", "-serial", "chardev:con",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=1 vlanip=" + ip,
	}, nic...)
	t.Logf("%s: qemu-system-x86_64 %s", name, strings.Join(args, " "))
	g := &guest{t: t, name: name, lines: make(chan string, 256), done: make(chan struct{})}
	g.cmd = exec.Command("qemu-system-x86_64", args...)
	g.cmd.Stderr = &g.log
	g.stdin, _ = g.cmd.StdinPipe()
	out, _ := g.cmd.StdoutPipe()
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(g.done)
		defer close(g.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			g.lines <- strings.TrimRight(sc.Text(), "\r")
		}
	}()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		for range g.lines {
		}
		<-g.done
		g.cmd.Wait()
	})
	return g
}

// await returns the first console line matching re.
func (g *guest) await(re *regexp.Regexp, within time.Duration) []string {
	g.t.Helper()
	timeout := time.After(within)
	var seen []string
	for {
		select {
		case line, ok := <-g.lines:
			if !ok {
				g.t.Fatalf("%s: QEMU ended while waiting for %q; console:\n%s\nstderr: %s", g.name, re, strings.Join(seen, "\n"), g.log.String())
			}
			seen = append(seen, line)
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			g.t.Fatalf("%s: no %q within %v; console:\n%s", g.name, re, within, strings.Join(seen, "\n"))
		}
	}
}

var doneRE = regexp.MustCompile(`VLAN-DONE (\d+)`)

// run runs a shell command in the guest and returns its exit status.
func (g *guest) run(cmd string) int {
	g.t.Helper()
	if _, err := io.WriteString(g.stdin, cmd+"\n"); err != nil {
		g.t.Fatalf("%s: %v", g.name, err)
	}
	status, _ := strconv.Atoi(g.await(doneRE, time.Minute)[1])
	return status
}

// until runs cmd (which bounds its own wait, as ping -W does) until it
// exits 0, for at most within.
func (g *guest) until(cmd string, within time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(within)
	for g.run(cmd) != 0 {
		if time.Now().After(deadline) {
			g.t.Fatalf("%s: %q still fails after %v", g.name, cmd, within)
		}
	}
}

func buildInitrd(t *testing.T, in testsystem.Inputs) string {
	t.Helper()
	bb, err := os.ReadFile(in.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := newcWriter{w: &buf}
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "lib/nic"} {
		w.add(d, syscall.S_IFDIR|0o755, nil, 0, 0)
	}
	w.add("dev/console", syscall.S_IFCHR|0o600, nil, 5, 1)
	w.add("init", syscall.S_IFREG|0o755, []byte(guestInit), 0, 0)
	w.add("bin/busybox", syscall.S_IFREG|0o755, bb, 0, 0)
	for i, m := range nicModules {
		ko, err := os.ReadFile(filepath.Join(in.ModulesDir, in.KernelVersion, "kernel", m))
		if err != nil {
			t.Skipf("test kernel lacks a NIC module: %v", err)
		}
		w.add(fmt.Sprintf("lib/nic/%d-%s", i, filepath.Base(m)), syscall.S_IFREG|0o644, ko, 0, 0)
	}
	w.add("TRAILER!!!", 0, nil, 0, 0)
	p := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newcWriter writes the kernel's initramfs format (cpio "newc").
type newcWriter struct {
	w   *bytes.Buffer
	ino int
}

func (c *newcWriter) add(name string, mode uint32, data []byte, rmaj, rmin int) {
	c.ino++
	fmt.Fprintf(c.w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0, name)
	c.pad()
	c.w.Write(data)
	c.pad()
}

func (c *newcWriter) pad() {
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
}

// Two real QEMUs on one LAN through a switch process: they ping each other,
// a Block cuts one off, an Unblock brings it back, and nothing remains.
func TestQEMUGuestsOnOneLAN(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two VMs")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("no qemu-system-x86_64")
	}
	in, err := testsystem.FindInputs("x86_64")
	if err != nil {
		t.Skip(err)
	}
	start := time.Now()
	initrd := buildInitrd(t, in)
	cfg := Config{Dir: filepath.Join(t.TempDir(), "vlan")}
	ctx := context.Background()
	pa, err := cfg.Join(ctx, "lan0", "alpha")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := cfg.Join(ctx, "lan0", "beta")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	st, err := cfg.Inspect(ctx, "lan0")
	if err != nil {
		t.Fatal(err)
	}

	a := startGuest(t, "alpha", in.Kernel, initrd, "10.0.0.1", pa)
	b := startGuest(t, "beta", in.Kernel, initrd, "10.0.0.2", pb)
	ready := regexp.MustCompile(`VLAN-READY`)
	a.await(ready, 2*time.Minute)
	b.await(ready, 2*time.Minute)
	booted := time.Since(start)

	a.until("ping -c 1 -W 1 10.0.0.2 >/dev/null", time.Minute)
	if s := b.run("ping -c 1 -W 1 10.0.0.1 >/dev/null"); s != 0 {
		t.Fatalf("beta cannot ping alpha: status %d", s)
	}
	pinged := time.Since(start)

	if err := cfg.Block(ctx, "lan0", pb.MAC); err != nil {
		t.Fatal(err)
	}
	if s := a.run("ping -c 2 -W 1 10.0.0.2 >/dev/null"); s == 0 {
		t.Fatal("alpha still reaches beta after Block(beta)")
	}
	if s := b.run("ping -c 2 -W 1 10.0.0.1 >/dev/null"); s == 0 {
		t.Fatal("beta still reaches alpha after Block(beta)")
	}
	if err := cfg.Unblock(ctx, "lan0", pb.MAC); err != nil {
		t.Fatal(err)
	}
	a.until("ping -c 1 -W 1 10.0.0.2 >/dev/null", 30*time.Second)
	if s := b.run("ping -c 1 -W 1 10.0.0.1 >/dev/null"); s != 0 {
		t.Fatalf("beta cannot ping alpha after Unblock: status %d", s)
	}
	t.Logf("boot %v, first pings %v, all done %v (TCG)", booted.Round(time.Millisecond), pinged.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	for _, g := range []*guest{a, b} {
		g.cmd.Process.Kill()
		g.cmd.Wait()
	}
	pa.Close()
	pb.Close()
	waitExit(t, st.PID, DefaultGrace+wait)
	if _, err := os.Stat(cfg.Dir); !os.IsNotExist(err) {
		t.Fatalf("the vlan directory remains: %v", err)
	}
}
