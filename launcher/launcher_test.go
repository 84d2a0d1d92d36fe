package launcher

import (
	"os/exec"
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int
		bad  bool
	}{
		{"512M", 512, false}, {"512", 512, false}, {"2G", 2048, false}, {"2g", 2048, false},
		{"1536m", 1536, false}, {"4GiB", 4096, false}, {"512MB", 512, false}, {"1T", 1024 * 1024, false},
		{"", 0, true}, {"0", 0, true}, {"-1G", 0, true}, {"lots", 0, true}, {"2X", 0, true}, {"1.5G", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMemory(tt.in)
		if tt.bad != (err != nil) || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestCommandLineOrder(t *testing.T) {
	vm := &VM{BootParams: []string{"init=/nix/store/x/init", "loglevel=4"}, UserParams: []string{"quiet", "a=b c"}}
	got := vm.CommandLine("console=ttyS0", "panic=-1")
	want := "init=/nix/store/x/init loglevel=4 console=ttyS0 panic=-1 quiet a=b c"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	ok := VM{Kernel: "k", CPUs: 1, MemoryMiB: 512, Shares: []Share{{Tag: "store"}, {Tag: "modules"}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := map[string]func(*VM){
		"no kernel":      func(vm *VM) { vm.Kernel = "" },
		"no cpus":        func(vm *VM) { vm.CPUs = 0 },
		"tiny memory":    func(vm *VM) { vm.MemoryMiB = 16 },
		"long tag":       func(vm *VM) { vm.Shares[0].Tag = strings.Repeat("t", 37) },
		"empty tag":      func(vm *VM) { vm.Shares[0].Tag = "" },
		"duplicate tags": func(vm *VM) { vm.Shares[1].Tag = "store" },
	}
	for name, change := range tests {
		vm := ok
		vm.Shares = append([]Share(nil), ok.Shares...)
		change(&vm)
		if vm.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestShellQuoteRoundTrips(t *testing.T) {
	words := []string{"plain", "with space", "it's", `"dq"`, "$HOME", "a,b=c", "", "new\nline", "ünï", `back\slash`, "*?[x]"}
	script := "set -- " + ShellJoin(words) + "; for w; do printf '%s\\0' \"$w\"; done"
	got, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSuffix(string(got), "\x00"), "\x00")
	if len(parts) != len(words) {
		t.Fatalf("got %d words %q", len(parts), parts)
	}
	for i := range words {
		if parts[i] != words[i] {
			t.Errorf("word %d: got %q, want %q", i, parts[i], words[i])
		}
	}
}
