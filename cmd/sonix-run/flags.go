package main

import (
	"fmt"
	"strings"

	"github.com/sonix-run/sonix-run/vmm"
)

// Typed flag values: each parses its syntax at once, so a bad value is
// exit 2 naming the flag, before anything starts.

type memoryFlag struct{ mib *int }

func (m memoryFlag) String() string { return fmt.Sprintf("%dM", *m.mib) }
func (m memoryFlag) Type() string   { return "SIZE" }
func (m memoryFlag) Set(s string) (err error) {
	*m.mib, err = vmm.ParseMemory(s)
	return err
}

type accelFlag struct{ a *vmm.Accel }

func (f accelFlag) String() string { return string(*f.a) }
func (f accelFlag) Type() string   { return "auto|kvm|tcg" }
func (f accelFlag) Set(s string) (err error) {
	*f.a, err = vmm.ParseAccel(s)
	return err
}

type netFlag struct{ n *string }

func (f netFlag) String() string { return *f.n }
func (f netFlag) Type() string   { return "user|none" }
func (f netFlag) Set(s string) (err error) {
	*f.n, err = vmm.ParseNet(s)
	return err
}

// listFlag is a repeatable flag whose every value is parsed by parse.
type listFlag[T any] struct {
	list  *[]T
	parse func(string) (T, error)
	typ   string
}

func (f listFlag[T]) String() string {
	var s []string
	for _, v := range *f.list {
		s = append(s, fmt.Sprint(v))
	}
	return "[" + strings.Join(s, ",") + "]"
}
func (f listFlag[T]) Type() string { return f.typ }
func (f listFlag[T]) Set(s string) error {
	v, err := f.parse(s)
	if err != nil {
		return err
	}
	*f.list = append(*f.list, v)
	return nil
}
