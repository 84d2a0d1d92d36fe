package kconfig

import (
	"strings"
)

// Problem is one option a kernel does not have as the fragment asks.
type Problem struct {
	Option  string // with the CONFIG_ prefix
	Modular bool   // built as a module; otherwise not enabled at all
	// Feature is what does not work without the option; "" when the guest
	// cannot boot imageless without it (the problem is fatal).
	Feature string
}

// Report is the preflight's verdict on one kernel.
type Report struct {
	Arch   string
	Source string // where the configuration was read (Kernel.Source)
	// Problems are in the fragment's order.
	Problems []Problem
	// Unchecked are options the source cannot tell about: bool options
	// (no module of their own) when only the module lists are known.
	Unchecked []string
}

// Check compares k with what the fragment for arch asks. Options the
// fragment lists only as prerequisites of others are not checked.
func Check(arch string, k *Kernel) (*Report, error) {
	if err := checkArch(arch); err != nil {
		return nil, err
	}
	r := &Report{Arch: arch, Source: k.Source}
	for _, g := range groups {
		for _, o := range g.options {
			if o.unchecked || !o.forArch(arch) {
				continue
			}
			switch k.state(o) {
			case stateBuiltin:
			case stateModular:
				r.Problems = append(r.Problems, Problem{Option: "CONFIG_" + o.name, Modular: true, Feature: g.feature})
			case stateMissing:
				r.Problems = append(r.Problems, Problem{Option: "CONFIG_" + o.name, Feature: g.feature})
			case stateUnknown:
				r.Unchecked = append(r.Unchecked, "CONFIG_"+o.name)
			}
		}
	}
	return r, nil
}

type optionState int

const (
	stateBuiltin optionState = iota
	stateModular
	stateMissing
	stateUnknown
)

func (k *Kernel) state(o option) optionState {
	if k.Config != nil {
		switch k.Config[o.name] {
		case "y":
			return stateBuiltin
		case "m":
			return stateModular
		}
		return stateMissing
	}
	if o.module != "" {
		switch {
		case k.Builtin[o.module]:
			return stateBuiltin
		case k.Modular[o.module]:
			return stateModular
		}
		// Built-in code that could be a module always carries module
		// info, which is what modules.builtin lists: absent from both
		// lists, the option is off.
		return stateMissing
	}
	if o.builtinName != "" && k.Builtin[o.builtinName] {
		return stateBuiltin
	}
	return stateUnknown
}

// Fatal reports whether the kernel cannot boot imageless: a boot-critical
// option is missing or modular.
func (r *Report) Fatal() bool {
	for _, p := range r.Problems {
		if p.Feature == "" {
			return true
		}
	}
	return false
}

// String is the report for people: empty when there is nothing to say, else
// a few lines ending with the command that fixes the config. It carries no
// program name; the caller prefixes one.
func (r *Report) String() string {
	if len(r.Problems) == 0 {
		return ""
	}
	var modular, missing, featModular []string
	var featMissing []string // "FEATURE: CONFIG_A CONFIG_B", in order of first appearance
	byFeature := map[string]int{}
	for _, p := range r.Problems {
		switch {
		case p.Feature == "" && p.Modular:
			modular = append(modular, p.Option)
		case p.Feature == "":
			missing = append(missing, p.Option)
		case p.Modular:
			featModular = append(featModular, p.Option)
		default:
			if i, ok := byFeature[p.Feature]; ok {
				featMissing[i] += " " + p.Option
			} else {
				byFeature[p.Feature] = len(featMissing)
				featMissing = append(featMissing, p.Feature+": "+p.Option)
			}
		}
	}
	var b strings.Builder
	if r.Fatal() {
		b.WriteString("kernel cannot boot imageless: it lacks built-in drivers the boot needs (read from " + r.Source + ")\n")
	} else {
		b.WriteString("kernel lacks options some features need (read from " + r.Source + ")\n")
	}
	line := func(head string, names []string) {
		if len(names) > 0 {
			b.WriteString("  " + head + ": " + strings.Join(names, " ") + "\n")
		}
	}
	line("modular, but the system's initrd has no modules for this kernel", modular)
	line("missing", missing)
	for _, f := range featMissing {
		feature, names, _ := strings.Cut(f, ": ")
		line("missing for "+feature, strings.Fields(names))
	}
	line("modular, loaded only from --modules", featModular)
	b.WriteString("  fix, in the kernel tree: " + FixCommand(r.Arch) + "\n")
	return b.String()
}
