//go:build !(darwin && cgo)

package vz

import (
	"context"
	"strings"
	"testing"

	"github.com/sonix-run/sonix-run/vmm"
)

func TestStubStartExplains(t *testing.T) {
	m, err := Backend{}.Start(context.Background(), &vmm.VM{}, vmm.Console{}, nil)
	if m != nil || err == nil {
		t.Fatalf("Start = %v, %v", m, err)
	}
	if !strings.Contains(err.Error(), "CGO_ENABLED=1") && !strings.Contains(err.Error(), "only on macOS") {
		t.Errorf("unclear error: %v", err)
	}
	if hostLimits() != (Limits{}) {
		t.Errorf("hostLimits without the framework: %+v", hostLimits())
	}
}
