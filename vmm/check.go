package vmm

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A Problem is a value that fails a check. Its message names the value by
// Field, where it is in what the caller built (a Config or VM field such
// as "CPUs" or "Forwards[1]"), or by Flag when the value came from a flag
// (the CLI's parsers set it; config.FlagMessage names the flags).
type Problem struct {
	Field string // e.g. "CPUs", "Forwards[1]"
	Flag  string // e.g. "--cpus"; "" when the value did not come from a flag
	Value string // as it would be typed; "" when there is none to show
	Want  string // what was expected, e.g. "expected 1 to 255"
}

func (p *Problem) Error() string {
	name := p.Field
	if p.Flag != "" {
		name = p.Flag
	}
	switch {
	case name == "":
		return p.Want
	case p.Value == "":
		return name + ": " + p.Want
	case p.Flag != "" && strings.HasSuffix(p.Flag, "="):
		return name + p.Value + ": " + p.Want
	}
	return name + " " + p.Value + ": " + p.Want
}

// At places p in a description: its field and, when the value came from a
// flag, the flag.
func (p *Problem) At(field, flag string) *Problem {
	q := *p
	if q.Field == "" {
		q.Field = field
	} else if field != "" {
		q.Field = field + "." + q.Field
	}
	if flag != "" {
		q.Flag = flag
	}
	return &q
}

// Problems lists the Problems in err: err itself, those errors.Join holds,
// and those wrapped in them.
func Problems(err error) []*Problem {
	switch e := err.(type) {
	case nil:
		return nil
	case *Problem:
		return []*Problem{e}
	case interface{ Unwrap() []error }:
		var out []*Problem
		for _, x := range e.Unwrap() {
			out = append(out, Problems(x)...)
		}
		return out
	case interface{ Unwrap() error }:
		return Problems(e.Unwrap())
	}
	return nil
}

func problem(value, format string, args ...any) *Problem {
	return &Problem{Value: value, Want: fmt.Sprintf(format, args...)}
}

// Validate checks a forward as QEMU would take it.
func (f Forward) Validate() error {
	var errs []error
	if f.Proto != "tcp" && f.Proto != "udp" {
		errs = append(errs, problem(f.String(), "expected the protocol tcp or udp, not %q", f.Proto))
	}
	for _, p := range []int{f.HostPort, f.GuestPort} {
		if p < 1 || p > 65535 {
			errs = append(errs, problem(f.String(), "expected ports 1 to 65535, not %d", p))
			break
		}
	}
	return errors.Join(errs...)
}

// Validate checks a disk as a backend would take it.
func (d Disk) Validate() error {
	var errs []error
	if d.Path == "" {
		errs = append(errs, problem("", "expected the image's file"))
	}
	if d.Format != "raw" && d.Format != "qcow2" {
		errs = append(errs, problem(d.Path, "expected the format raw or qcow2, not %q", d.Format))
	}
	if d.Serial != "" && (len(d.Serial) > 20 || strings.ContainsAny(d.Serial, ", ")) {
		// virtio-blk's serial holds 20 bytes; QEMU's -device splits on commas.
		errs = append(errs, problem(d.Path, "serial %q: expected at most 20 bytes without commas or spaces", d.Serial))
	}
	return errors.Join(errs...)
}

// Validate checks a share.
func (s Share) Validate() error {
	var errs []error
	if s.HostDir == "" {
		errs = append(errs, problem("", "expected the host directory"))
	}
	if err := CheckTag(s.Tag); err != nil {
		errs = append(errs, problem(s.HostDir, "%v", err))
	}
	if s.Cache != CacheAlways && s.Cache != CacheAuto {
		errs = append(errs, problem(s.HostDir, "expected the cache always or auto, not %q", s.Cache))
	}
	return errors.Join(errs...)
}

// VLAN is a virtual LAN a VM joins (--vlan NAME[=ADDR/PREFIX]): shared with
// every VM of the user's that names the same LAN.
type VLAN struct {
	LAN  string
	Addr netip.Prefix // the guest's address on it; invalid (zero) for none
}

func (v VLAN) String() string {
	if v.Addr.IsValid() {
		return v.LAN + "=" + v.Addr.String()
	}
	return v.LAN
}

// MaxLANName bounds a LAN name: it becomes a path component of Unix socket
// paths, which the kernel limits to 107 bytes in all.
const MaxLANName = 32

// Validate checks a VLAN: its name is 1 to MaxLANName letters, digits,
// '-', '_' or '.', starting with a letter or digit.
func (v VLAN) Validate() error {
	ok := v.LAN != "" && len(v.LAN) <= MaxLANName && isAlnum(v.LAN[0])
	for i := 0; ok && i < len(v.LAN); i++ {
		c := v.LAN[i]
		ok = isAlnum(c) || c == '-' || c == '_' || c == '.'
	}
	if !ok {
		return problem(v.String(), "vlan name %q: expected 1 to %d letters, digits, '-', '_' or '.', starting with a letter or digit", v.LAN, MaxLANName)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ParseVLAN reads NAME or NAME=ADDR/PREFIX (--vlan).
func ParseVLAN(s string) (VLAN, error) {
	lan, addr, hasAddr := strings.Cut(s, "=")
	v := VLAN{LAN: lan}
	if hasAddr {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return VLAN{}, &Problem{Flag: "--vlan", Value: strconv.Quote(s), Want: fmt.Sprintf("expected NAME or NAME=ADDR/PREFIX such as lan1=10.0.0.1/24: %v", err)}
		}
		v.Addr = p
	}
	if err := v.Validate(); err != nil {
		return VLAN{}, &Problem{Flag: "--vlan", Value: strconv.Quote(s), Want: err.(*Problem).Want}
	}
	return v, nil
}
