package harness

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sonix-run/sonix-run/config"
	"github.com/sonix-run/sonix-run/vlan"
	"github.com/sonix-run/sonix-run/vmm"
)

// Network is a virtual LAN for one test (sonix-run --vlan): VMs whose
// configuration went through Attach share one Ethernet segment, and no
// other test's VMs are on it.
type Network struct {
	t      testing.TB
	name   string
	subnet int // N of the automatic addresses 10.N.0.X/24

	mu    sync.Mutex
	next  int               // X of the next automatic address
	addrs map[string]string // VM name -> its address on the LAN, without prefix
	used  map[string]string // address -> VM name
}

// networkSeq numbers the Networks of this process, for their subnets.
var networkSeq atomic.Uint32

// NewNetwork makes a LAN for test t. Its name is unique to the test and
// this process; the LAN itself (its switch) comes up with its first VM and
// goes away a moment after its last.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	name := uniqueLANName(t.Name())
	if err := vlan.CheckName(name); err != nil {
		t.Fatalf("harness: %v", err) // cannot happen: the name is sanitised
	}
	// 10.1.0.0/24 to 10.254.0.0/24: never 10.0.2.0/24, QEMU's user network.
	subnet := int((networkSeq.Add(1)-1)%254) + 1
	return &Network{t: t, name: name, subnet: subnet, next: 1, addrs: map[string]string{}, used: map[string]string{}}
}

// Name is the LAN's name, as `sonix-run --vlan NAME` takes it.
func (n *Network) Name() string { return n.name }

// Attach returns cfg with a NIC on the LAN and the static address addr
// (ADDR/PREFIX, e.g. "192.168.1.1/24" or "fd00::1/64") for the guest to set
// on it; "" takes the next automatic address, 10.N.0.1/24, 10.N.0.2/24, ...
// in the order of the calls (N differs between the Networks of a process,
// so a VM may join several). The address reaches the guest as the kernel
// parameter sonix.ip=ADDR/PREFIX,MAC, with the MAC of the VM's NIC on this
// LAN; that MAC comes from the VM's name, so Attach names the VM (after the
// test) unless cfg.Name is set. A bad or duplicate address fails the test.
// Call it from the test's goroutine.
func (n *Network) Attach(cfg config.Config, addr string) config.Config {
	n.t.Helper()
	if cfg.Name == "" {
		cfg.Name = uniqueVMName(n.t.Name())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr == "" {
		if n.next > 254 {
			n.t.Fatalf("harness: network %s: no automatic address left (10.%d.0.1-254 are taken); give addresses yourself", n.name, n.subnet)
		}
		addr = fmt.Sprintf("10.%d.0.%d/24", n.subnet, n.next)
		n.next++
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		n.t.Fatalf("harness: network %s: address %q for VM %s: expected ADDR/PREFIX such as 10.0.0.1/24: %v", n.name, addr, cfg.Name, err)
	}
	ip := p.Addr().String()
	if _, dup := n.addrs[cfg.Name]; dup || slices.ContainsFunc(cfg.VLANs, n.is) {
		n.t.Fatalf("harness: network %s: VM %s is attached twice", n.name, cfg.Name)
	}
	if other, dup := n.used[ip]; dup {
		n.t.Fatalf("harness: network %s: address %s for VM %s is VM %s's already", n.name, ip, cfg.Name, other)
	}
	n.addrs[cfg.Name], n.used[ip] = ip, cfg.Name
	cfg.VLANs = append(slices.Clip(cfg.VLANs), vmm.VLAN{LAN: n.name, Addr: p})
	return cfg
}

// is says whether v is this LAN.
func (n *Network) is(v vmm.VLAN) bool { return v.LAN == n.name }

// Addr is the address (without prefix) of vm on the LAN, for commands such
// as wget http://ADDR/; "" for a VM not attached to it.
func (n *Network) Addr(vm *VM) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs[vm.Name()]
}

// Block cuts vm's link to the LAN: the switch drops every frame from it and
// to it until Unblock, as if its cable were pulled at the switch (the guest
// still sees its link up).
func (n *Network) Block(ctx context.Context, vm *VM) error {
	return n.setBlocked(ctx, vm, "block", vlan.Block)
}

// Unblock restores a link that Block cut.
func (n *Network) Unblock(ctx context.Context, vm *VM) error {
	return n.setBlocked(ctx, vm, "unblock", vlan.Unblock)
}

func (n *Network) setBlocked(ctx context.Context, vm *VM, what string, do func(context.Context, string, net.HardwareAddr) error) error {
	op := fmt.Sprintf("%s its link to network %s", what, n.name)
	if !slices.ContainsFunc(vm.m.cfg.VLANs, n.is) {
		return vm.newError(op, nil, fmt.Errorf("the VM is not on network %s (its configuration did not go through Attach)", n.name))
	}
	e := vm.m.log.start(what, "network "+n.name)
	err := do(ctx, n.name, vlan.MAC(vm.Name(), n.name))
	e.finish(0, err)
	if err != nil {
		return vm.newError(op, nil, err)
	}
	return nil
}

// MustBlock is Block bounded by the VM's Must timeout; an error fails t.
func (n *Network) MustBlock(t testing.TB, vm *VM) {
	t.Helper()
	ctx, cancel := vm.mustContext()
	defer cancel()
	if err := n.Block(ctx, vm); err != nil {
		t.Fatal(err)
	}
}

// MustUnblock is Unblock bounded by the VM's Must timeout; an error fails t.
func (n *Network) MustUnblock(t testing.TB, vm *VM) {
	t.Helper()
	ctx, cancel := vm.mustContext()
	defer cancel()
	if err := n.Unblock(ctx, vm); err != nil {
		t.Fatal(err)
	}
}
