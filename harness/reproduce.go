package harness

import (
	"strconv"
	"strings"

	"github.com/sonix-run/sonix-run/launcher"
	"github.com/sonix-run/sonix-run/vmm"
)

// reproduceLine is the sonix-run command line that boots what cfg
// describes: every field a flag can say, defaults left out. The harness's
// own fields (Stdout, Agent, Signals) have no flag and need none.
func reproduceLine(cfg launcher.Config) string {
	args := []string{"sonix-run"}
	flag := func(name, value string) { args = append(args, "--"+name, value) }
	str := func(name, value, def string) {
		if value != "" && value != def {
			flag(name, value)
		}
	}
	str("name", cfg.Name, "")
	str("store", cfg.StoreDir, launcher.DefaultStoreDir)
	str("store-tag", cfg.StoreTag, launcher.DefaultStoreTag)
	str("modules", cfg.ModulesDir, "")
	str("modules-tag", cfg.ModulesTag, launcher.DefaultModulesTag)
	str("kernel", cfg.Kernel, "")
	str("initrd", cfg.Initrd, "")
	str("specialisation", cfg.Specialisation, "")
	str("net", cfg.Net, vmm.NetUser)
	for _, f := range cfg.Forwards {
		flag("forward", f.String())
	}
	for _, d := range cfg.Disks {
		spec := d.Path
		if d.Format != "" {
			spec += ",format=" + d.Format
		}
		if d.ReadOnly {
			spec += ",ro"
		}
		flag("disk", spec)
	}
	for _, s := range cfg.Shares {
		spec := s.HostDir + ":" + s.Tag
		if s.ReadOnly {
			spec += ":ro"
		}
		flag("share", spec)
	}
	for _, lan := range cfg.VLANs {
		flag("vlan", lan)
	}
	for _, a := range cfg.Append {
		flag("append", a)
	}
	for _, a := range cfg.QEMUArgs {
		flag("qemu-arg", a)
	}
	if cfg.GDBPort != 0 {
		args = append(args, "--gdb="+strconv.Itoa(cfg.GDBPort))
	}
	if cfg.GDBWait {
		args = append(args, "--gdb-wait")
	}
	if cfg.CPUs != 0 && cfg.CPUs != launcher.DefaultCPUs {
		flag("cpus", strconv.Itoa(cfg.CPUs))
	}
	if cfg.MemoryMiB != 0 && cfg.MemoryMiB != launcher.DefaultMemoryMiB {
		flag("memory", strconv.Itoa(cfg.MemoryMiB)+"M")
	}
	str("accel", string(cfg.Accel), string(vmm.AccelAuto))
	str("backend", cfg.Backend, "auto")
	if cfg.Rosetta {
		args = append(args, "--rosetta")
	}
	if cfg.Timeout > 0 {
		flag("timeout", cfg.Timeout.String())
	}
	if cfg.StopTimeout > 0 && cfg.StopTimeout != launcher.DefaultStopTimeout {
		flag("stop-timeout", cfg.StopTimeout.String())
	}
	str("console-log", cfg.ConsoleLog, "")
	if strings.HasPrefix(cfg.Target, "-") {
		args = append(args, "--")
	}
	args = append(args, cfg.Target)
	return launcher.ShellJoin(args)
}
