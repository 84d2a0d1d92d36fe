package kconfig

// option is one CONFIG_ symbol sonix-run wants set to y.
type option struct {
	name string // without the CONFIG_ prefix
	// module is the module the option builds when set to m (the name in
	// modules.builtin and modules.order, '-' as '_'); "" for bool options.
	module string
	// builtinName is, for a bool option whose object carries module info
	// anyway, the name modules.builtin lists it under when it is enabled.
	// Its absence proves nothing.
	builtinName string
	arches      []string // nil: every architecture
	// unchecked options are in the fragment so that the others can be
	// enabled from a small base config (tinyconfig) or for tuning; the
	// preflight does not report them.
	unchecked bool
}

// group is a set of options with one reason.
type group struct {
	why []string // the fragment's comment, one line each
	// feature is what stops working without the group, for the preflight's
	// report; "" means the guest cannot boot imageless without it, so a
	// missing or modular option there is fatal.
	feature string
	options []option
}

const (
	x86_64  = "x86_64"
	aarch64 = "aarch64"
)

var (
	onlyX86   = []string{x86_64}
	onlyARM64 = []string{aarch64}
)

// groups is the fragment, in order. An option appears once, in the first
// group that needs it; later groups' comments mention it when they need it
// too.
var groups = []group{
	{
		why: []string{"64-bit kernel: the system's userland is x86_64-linux."},
		options: []option{
			{name: "64BIT", arches: onlyX86},
		},
	},
	{
		why: []string{
			"ACPI: poweroff ends the run through it, and QEMU's q35 machine",
			"describes the pvpanic device and the serial port in it.",
		},
		options: []option{
			{name: "ACPI", arches: onlyX86},
		},
	},
	{
		why: []string{
			"Virtio over PCI: every device sonix-run gives the guest (QEMU's q35",
			"and virt machines, Apple's Virtualization framework) is virtio-pci.",
			"PCI_HOST_GENERIC drives the virt machine's PCIe host bridge; MSI-X",
			"gives each virtqueue its own interrupt.",
		},
		options: []option{
			{name: "PCI", unchecked: true},
			{name: "PCI_MSI", unchecked: true},
			{name: "PCI_HOST_GENERIC", module: "pci_host_generic", arches: onlyARM64},
			{name: "VIRTIO_MENU", unchecked: true},
			{name: "VIRTIO_PCI", module: "virtio_pci"},
		},
	},
	{
		why: []string{
			"Virtio over MMIO: for machines without PCI (QEMU microvm). sonix-run's",
			"machines do not use it, so the preflight does not ask for it.",
		},
		options: []option{
			{name: "VIRTIO_MMIO", module: "virtio_mmio", unchecked: true},
		},
	},
	{
		why: []string{
			"virtio-fs over FUSE: the store (tag store) and the modules tree are",
			"virtio-fs shares; the root is a tmpfs, so there is no disk to boot from.",
		},
		options: []option{
			{name: "FUSE_FS", module: "fuse"},
			{name: "VIRTIO_FS", module: "virtiofs"},
		},
	},
	{
		why: []string{
			"Consoles: the machine's serial console carries the kernel log and",
			"the console (ttyS0, an 8250/16550 UART, on x86_64; ttyAMA0, a PL011,",
			"on aarch64). The virtio console carries the agent's ports (the",
			"virtserialport org.sonix-run.agent and its siblings) and is hvc0, the",
			"console, under Apple's Virtualization framework.",
		},
		options: []option{
			{name: "TTY", unchecked: true},
			{name: "PRINTK"},
			{name: "SERIAL_8250", module: "8250", arches: onlyX86},
			{name: "SERIAL_8250_CONSOLE", arches: onlyX86},
			{name: "SERIAL_AMBA_PL011", module: "amba_pl011", arches: onlyARM64},
			{name: "SERIAL_AMBA_PL011_CONSOLE", arches: onlyARM64},
			{name: "VIRTIO_CONSOLE", module: "virtio_console"},
		},
	},
	{
		why: []string{
			"File systems stage 1 builds the system on: the tmpfs root, devtmpfs",
			"on /dev (DEVTMPFS_MOUNT mounts it for a boot without an initrd),",
			"/proc with /proc/sys, and /sys. systemd needs all of them too.",
		},
		options: []option{
			{name: "SHMEM"},
			{name: "TMPFS"},
			{name: "DEVTMPFS"},
			{name: "DEVTMPFS_MOUNT", unchecked: true},
			{name: "PROC_FS"},
			{name: "PROC_SYSCTL"},
			{name: "SYSFS"},
		},
	},
	{
		why: []string{
			"The initrd, and the compressions a NixOS initrd comes in",
			"(boot.initrd.compressor: zstd by default, gzip, xz).",
		},
		options: []option{
			{name: "BLK_DEV_INITRD"},
			{name: "RD_GZIP"},
			{name: "RD_XZ"},
			{name: "RD_ZSTD"},
		},
	},
	{
		why: []string{"Programs: ELF binaries, and #! scripts (NixOS's stage 1 init is one)."},
		options: []option{
			{name: "BINFMT_ELF", builtinName: "binfmt_elf"},
			{name: "BINFMT_SCRIPT", module: "binfmt_script"},
		},
	},
	{
		why: []string{
			"System calls a small config may drop: the agent (a static Go binary:",
			"futex, epoll, eventfd, timers, madvise) and glibc, users and groups",
			"(setuid, --user), and what systemd requires (inotify, signalfd,",
			"timerfd, epoll, open_by_handle_at). Nix locks files.",
		},
		options: []option{
			{name: "MULTIUSER"},
			{name: "FUTEX"},
			{name: "EPOLL"},
			{name: "EVENTFD"},
			{name: "SIGNALFD"},
			{name: "TIMERFD"},
			{name: "POSIX_TIMERS"},
			{name: "INOTIFY_USER"},
			{name: "FHANDLE"},
			{name: "FILE_LOCKING"},
			{name: "ADVISE_SYSCALLS"},
		},
	},
	{
		why: []string{
			"Unix sockets: systemd, journald and dbus talk over them; systemd",
			"also requires NET.",
		},
		options: []option{
			{name: "NET"},
			{name: "UNIX", module: "unix"},
		},
	},
	{
		why: []string{
			"cgroups: systemd mounts the unified hierarchy (cgroup v2) and will not",
			"start without it.",
		},
		options: []option{
			{name: "CGROUPS"},
		},
	},
	{
		why: []string{
			"What else NixOS asks of a kernel for systemd (its",
			"system.requiredKernelConfig): the autofs behind automount units, ACLs",
			"and xattrs on tmpfs, seccomp filters, the hash sockets and DMI ids.",
		},
		feature: "NixOS's systemd",
		options: []option{
			{name: "AUTOFS_FS", module: "autofs4"},
			{name: "TMPFS_POSIX_ACL"},
			{name: "TMPFS_XATTR"},
			{name: "SECCOMP"},
			{name: "SECCOMP_FILTER"},
			{name: "CRYPTO", unchecked: true},
			{name: "CRYPTO_USER_API_HASH", module: "algif_hash"},
			{name: "CRYPTO_HMAC", module: "hmac"},
			{name: "CRYPTO_SHA256", module: "sha256_generic"},
			{name: "DMI", arches: onlyX86, unchecked: true},
			{name: "DMIID", arches: onlyX86},
		},
	},
	{
		why:     []string{"Pseudo-terminals: the agent's terminal mode, and every shell login."},
		feature: "terminals (the agent's tty mode)",
		options: []option{
			{name: "UNIX98_PTYS"},
		},
	},
	{
		why: []string{
			"Networking: --net user (the default) and --vlan attach a virtio-net",
			"NIC; DHCP clients use packet sockets; IPv4 and IPv6.",
		},
		feature: "--net user, --vlan",
		options: []option{
			{name: "INET"},
			{name: "IPV6", module: "ipv6"},
			{name: "PACKET", module: "af_packet"},
			{name: "NETDEVICES", unchecked: true},
			{name: "NET_CORE", unchecked: true},
			{name: "VIRTIO_NET", module: "virtio_net"},
		},
	},
	{
		why:     []string{"Block devices: --disk and --state attach virtio-blk disks."},
		feature: "--disk, --state",
		options: []option{
			{name: "BLOCK", unchecked: true},
			{name: "BLK_DEV", unchecked: true},
			{name: "VIRTIO_BLK", module: "virtio_blk"},
		},
	},
	{
		why: []string{
			"Entropy: the machine has a virtio-rng device, so early getrandom()",
			"calls do not wait for the pool.",
		},
		feature: "virtio-rng",
		options: []option{
			{name: "HW_RANDOM", module: "rng_core", unchecked: true},
			{name: "HW_RANDOM_VIRTIO", module: "virtio_rng"},
		},
	},
	{
		why: []string{
			"pvpanic: a panicking guest tells QEMU, which ends the run as a failure",
			"at once (the ISA device, found through ACPI, on x86_64; pvpanic-pci on",
			"aarch64).",
		},
		feature: "panic reporting (pvpanic)",
		options: []option{
			{name: "PVPANIC", unchecked: true},
			{name: "PVPANIC_MMIO", module: "pvpanic_mmio", arches: onlyX86},
			{name: "PVPANIC_PCI", module: "pvpanic_pci", arches: onlyARM64},
		},
	},
	{
		why:     []string{"SMP: --cpus gives the guest more than one CPU."},
		feature: "--cpus",
		options: []option{
			{name: "SMP"},
		},
	},
	{
		why: []string{
			"Running as a guest: kvmclock keeps time under KVM, and the PVH entry",
			"point lets QEMU boot the uncompressed vmlinux (--kernel vmlinux) on",
			"x86_64.",
		},
		feature: "a KVM guest's clock, --kernel vmlinux (PVH)",
		options: []option{
			{name: "HYPERVISOR_GUEST", arches: onlyX86, unchecked: true},
			{name: "PARAVIRT", arches: onlyX86, unchecked: true},
			{name: "KVM_GUEST", arches: onlyX86},
			{name: "PVH", arches: onlyX86},
		},
	},
	{
		why: []string{
			"The wall clock: the virt machine's PL031 RTC sets the time at boot",
			"(x86_64 reads the CMOS clock without a driver).",
		},
		feature: "the wall clock (PL031 RTC)",
		options: []option{
			{name: "RTC_CLASS", arches: onlyARM64, unchecked: true},
			{name: "RTC_HCTOSYS", arches: onlyARM64},
			{name: "RTC_DRV_PL031", module: "rtc_pl031", arches: onlyARM64},
		},
	},
	{
		why: []string{
			"The kernel's own config, embedded in the image and in /proc/config.gz:",
			"sonix-run's preflight reads it back from the image before booting.",
		},
		feature: "sonix-run's preflight (reading the embedded config)",
		options: []option{
			{name: "IKCONFIG", module: "configs"},
			{name: "IKCONFIG_PROC"},
		},
	},
	{
		why: []string{
			"The gdb stub (--gdb): debug info and symbols in vmlinux, and the",
			"lx- helper scripts. KASLR may stay on: sonix-run boots with nokaslr",
			"when --gdb is given, so RANDOMIZE_BASE need not be off.",
			"DEBUG_INFO is chosen through the DWARF choice since Linux 5.18.",
		},
		feature: "--gdb",
		options: []option{
			{name: "DEBUG_KERNEL", unchecked: true},
			{name: "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT", unchecked: true},
			{name: "DEBUG_INFO"},
			{name: "GDB_SCRIPTS", unchecked: true},
			{name: "KALLSYMS"},
		},
	},
	{
		why: []string{
			"Crash dumps (--dump): KEXEC brings CRASH_CORE, whose VMCOREINFO note",
			"the fw_cfg driver hands to QEMU's vmcoreinfo device, so crash and drgn",
			"can open the dump (on aarch64, KEXEC needs SUSPEND). SysRq lets a test",
			"force a panic (echo c > /proc/sysrq-trigger).",
		},
		feature: "--dump",
		options: []option{
			{name: "SUSPEND", arches: onlyARM64, unchecked: true},
			{name: "KEXEC"},
			{name: "FW_CFG_SYSFS", module: "qemu_fw_cfg"},
			{name: "MAGIC_SYSRQ"},
		},
	},
	{
		why: []string{
			"overlayfs: sonix-run.writableStore puts a tmpfs over the read-only",
			"store.",
		},
		feature: "sonix-run.writableStore",
		options: []option{
			{name: "OVERLAY_FS", module: "overlay"},
		},
	},
}

// forArch reports whether o applies to arch.
func (o option) forArch(arch string) bool {
	if o.arches == nil {
		return true
	}
	for _, a := range o.arches {
		if a == arch {
			return true
		}
	}
	return false
}
