package testsystem

import (
	"fmt"
	"strings"
)

// busyboxApplets are the applet links created next to busybox, both in the
// store and in the initrd. All exist in Debian's busybox-static 1.35.
var busyboxApplets = []string{
	"[", "ash", "awk", "basename", "cat", "chmod", "chown", "chroot", "cp", "cttyhack",
	"cut", "date", "df", "dirname", "dmesg", "du", "echo", "env", "false",
	"find", "free", "grep", "halt", "head", "hostname", "httpd", "id", "ip", "insmod", "kill",
	"less", "ln", "mke2fs", "nc", "base64", "ls", "sha256sum", "md5sum", "od", "dd", "wget", "ping", "diff", "cmp", "tar", "gzip", "timeout", "nproc", "lsmod", "mkdir", "mknod", "modinfo", "modprobe",
	"more", "mount", "mv", "poweroff", "printf", "ps", "pwd", "readlink",
	"reboot", "rm", "rmdir", "rmmod", "sed", "seq", "setsid", "sh", "sleep",
	"sort", "stat", "stty", "switch_root", "sync", "tail", "tee", "test",
	"touch", "tr", "true", "umount", "uname", "uptime", "vi", "wc", "which",
	"xargs",
}

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=+:,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// stage1Load is a module file that stage 1 loads (a path inside the
// initrd), and the conditions under which it does: any of when (shell
// conditions of stage 1: has_pci, cmdline_has); none means always.
type stage1Load struct {
	path string
	when []string
}

// stage1Script is the initrd's /init. It runs under busybox sh as PID 1.
// modules are in load order, built for kernel release.
func stage1Script(release string, modules []stage1Load) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# sonix-run test system, stage 1: load the virtio/virtiofs drivers, build a
# tmpfs root with the store shared by the host under virtiofs tag "store"
# (and kernel modules under tag "modules") and switch to the init= program.
export PATH=/bin
set -f # no globbing: kernel parameters are split below

fail() {
	echo "sonix-test: stage 1 failed: $*"
	# PID 1 exiting panics the kernel, which ends the run.
	exit 1
}

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"

load() {
	insmod "$1" || case "$1" in
		*.xz|*.zst) fail "insmod $1 failed (compressed module: this busybox insmod may not decompress it; use a kernel with uncompressed modules)" ;;
		*) fail "insmod $1 failed" ;;
	esac
}

# Drivers of devices the machine does not have, and ext4 without a state
# disk, are not loaded: each insmod costs tens of milliseconds under TCG.
# The PCI devices are known before any module is loaded; with none seen
# (a PCI host driver that is a module), everything is loaded.
read -r cmdline < /proc/cmdline
pci_ids=
set +f
for d in /sys/bus/pci/devices/*; do
	[ -r "$d/vendor" ] && [ -r "$d/device" ] || continue
	read -r v < "$d/vendor"
	read -r i < "$d/device"
	pci_ids="$pci_ids ${v#0x}:${i#0x}"
done
set -f
has_pci() { # has_pci VENDOR:DEVICE...
	[ -n "$pci_ids" ] || return 0
	for id; do
		case "$pci_ids " in *" $id "*) return 0 ;; esac
	done
	return 1
}
cmdline_has() { # cmdline_has PREFIX: a kernel parameter starts with PREFIX
	case " $cmdline" in *" $1"*) return 0 ;; esac
	return 1
}
`)
	// Another kernel (sonix-run --kernel) cannot load these modules: it
	// boots only with the drivers built in, which the mount below checks.
	fmt.Fprintf(&b, "if [ \"$(uname -r)\" = %s ]; then\n\t:\n", shQuote(release))
	for _, m := range modules {
		if len(m.when) == 0 {
			fmt.Fprintf(&b, "\tload %s\n", shQuote(m.path))
			continue
		}
		fmt.Fprintf(&b, "\tif %s; then load %s; fi\n", strings.Join(m.when, " || "), shQuote(m.path))
	}
	fmt.Fprintf(&b, "else\n\techo \"sonix-test: kernel $(uname -r) is not \"%s\", whose modules this initrd holds; using its built-in drivers\"\nfi\n", shQuote(release))
	b.WriteString(`
# The kernel opened /dev/console for this script before virtio_console was
# loaded: under Virtualization.framework (console=hvc0) everything written so
# far went nowhere. Once hvc0 exists, reopen the console (a failed exec
# redirection would end PID 1, hence the test in a subshell first).
case " $cmdline " in
*" console=hvc0"*)
	i=0
	while [ ! -e /sys/class/tty/hvc0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
	if (exec >/dev/console) 2>/dev/null; then exec </dev/console >/dev/console 2>&1; fi
	;;
esac

init=
for arg in $cmdline; do
	case "$arg" in
		init=*) init="${arg#init=}" ;;
	esac
done
[ -n "$init" ] || fail "no init= on the kernel command line"

mount -t tmpfs -o mode=0755 root /sysroot || fail "cannot mount a tmpfs on /sysroot"
mkdir -p /sysroot/nix/store /sysroot/lib/modules /sysroot/dev /sysroot/proc /sysroot/sys /sysroot/run /sysroot/tmp /sysroot/etc /sysroot/root ||
	fail "cannot create directories in the tmpfs root"
chmod 1777 /sysroot/tmp
chmod 0700 /sysroot/root
grep -qw virtiofs /proc/filesystems ||
	fail "kernel $(uname -r) has no virtiofs: it needs CONFIG_VIRTIO_PCI=y CONFIG_FUSE_FS=y CONFIG_VIRTIO_FS=y (sonix-run kconfig)"
mount -t virtiofs -o ro store /sysroot/nix/store ||
	fail "cannot mount virtiofs tag 'store' on /nix/store (is a vhost-user-fs device with tag=store attached?)"
if ! mount -t virtiofs -o ro modules /sysroot/lib/modules 2>/dev/null; then
	echo "sonix-test: no virtiofs tag 'modules'; continuing without /lib/modules"
fi
[ -x "/sysroot$init" ] || fail "init $init is not an executable in the store"

mount --move /dev /sysroot/dev || fail "cannot move /dev into the new root"
umount /proc /sys
exec switch_root /sysroot "$init"
fail "switch_root to $init failed"
`)
	return b.String()
}

// stage2Script is the system's init, run by stage 1 through switch_root.
// bin is the guest path of the busybox bin directory in the store, agent
// that of the guest agent.
func stage2Script(bin, agent string) string {
	return fmt.Sprintf(`#!%[1]s/sh
# sonix-run test system, stage 2: report what the guest sees, then do what
# the kernel parameter sonix.test= asks (poweroff, panic, reboot, hang,
# serve, shell). With sonix.agent=respawn, the guest agent is started again
# whenever it exits.
export PATH=%[1]s
export HOME=/root

mkdir -p /proc /sys /dev /run /tmp
mountpoint() {
	while read -r _dev mnt _rest; do
		[ "$mnt" = "$1" ] && return 0
	done < /proc/mounts
	return 1
}
[ -r /proc/mounts ] || mount -t proc proc /proc
mountpoint /sys || mount -t sysfs sysfs /sys
mountpoint /dev || mount -t devtmpfs devtmpfs /dev

# sonix-run's guest agent (docs/protocol.md), when sonix-run gave the guest
# its port, runs beside whatever sonix.test= asks; without an action it is
# what the system does until it is asked to power off. sonix.test=noagent
# leaves it out, for the boot-failure case.
read -r cmdline < /proc/cmdline
action=
set -f
for arg in $cmdline; do
	case "$arg" in
		sonix.test=*) action="${arg#sonix.test=}" ;;
	esac
done
set +f
agent_port=
for p in /sys/class/virtio-ports/*; do
	name=
	[ -r "$p/name" ] && read -r name < "$p/name"
	[ "$name" = org.sonix-run.agent ] && agent_port=1
done
if [ "$action" != noagent ] && [ -n "$agent_port" ]; then
	# Read the agent into the page cache (over virtio-fs) on the other
	# CPU while the rest of this script runs: it starts sooner.
	cat %[2]s > /dev/null 2>&1 &
fi

# Last entry wins: a later mount on the same point hides earlier ones.
root_fstype=unknown
store_fstype=none
store_mode=none
while read -r dev mnt fstype opts rest; do
	case "$mnt" in
		/) root_fstype=$fstype ;;
		/nix/store)
			store_fstype=$fstype
			case ",$opts," in
				*,ro,*) store_mode=ro ;;
				*) store_mode=rw ;;
			esac
			;;
	esac
done < /proc/mounts

modules=
for m in /lib/modules/*; do
	[ -e "$m" ] || continue
	modules="$modules${modules:+ }${m##*/}"
done

echo "sonix-test: root-fstype=$root_fstype"
echo "sonix-test: store-fstype=$store_fstype store-mode=$store_mode"
echo "sonix-test: modules=${modules:-none}"
echo "sonix-test: arch=$(uname -m)"
block=
for b in /sys/block/*; do
	case "${b##*/}" in
		loop*|ram*|zram*|'*') ;;
		*) block="$block${block:+ }${b##*/}" ;;
	esac
done
echo "sonix-test: block=${block:-none}"
echo "sonix-test: cmdline=$cmdline"

# The --state disk (serial sonix-state, announced by sonix.state): a blank
# disk is formatted on first boot, one with data is never formatted; /home
# lives on it, so what is written there survives the run.
case " $cmdline " in
*" sonix.state "* | *" sonix.state="*)
	state=
	for b in /sys/block/vd*; do
		[ "$(cat "$b/serial" 2>/dev/null)" = sonix-state ] && state=/dev/${b##*/}
	done
	if [ -z "$state" ]; then
		echo "sonix-test: sonix.state given but no disk with serial sonix-state"
	else
		mkdir -p /sonix-state
		if [ "$(head -c 65536 "$state" | tr -d '\000' | wc -c)" -eq 0 ]; then
			echo "sonix-test: formatting the blank state disk $state"
			mke2fs -q -L sonix-state "$state"
		fi
		if mount -t ext2 "$state" /sonix-state; then
			mkdir -p /sonix-state/home /home
			mount --bind /sonix-state/home /home
			echo "sonix-test: state on $state"
		else
			echo "sonix-test: cannot mount the state disk $state; it is left as it is"
		fi
	fi
	;;
esac

# /bin/sh, as NixOS has it: scripts copied in name it in their #! line.
mkdir -p /bin
ln -sf %[1]s/sh /bin/sh

# /etc for the agent's --user and tty modes: root, and an unprivileged
# user for tests that must not run as root.
mkdir -p /dev/pts /etc /home/sonix
mountpoint /dev/pts || mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'sonix:x:1000:1000:sonix test user:/home/sonix:/bin/sh' >> /etc/passwd
printf 'root:x:0:\nsonix:x:1000:\n' > /etc/group
chown 1000:1000 /home/sonix
hostname sonix-test

# Static addresses from the kernel command line, for virtual LANs (--vlan):
# sonix.ip=ADDR/PREFIX,MAC on the NIC with that MAC, or without ,MAC on
# every Ethernet NIC (the NixOS module's sonix-run.staticAddress does the same).
ip link set lo up
set -f
specs=
for arg in $cmdline; do
	case "$arg" in
		sonix.ip=*) specs="$specs ${arg#sonix.ip=}" ;;
	esac
done
set +f
for spec in $specs; do
	addr=${spec%%%%,*}
	mac=
	case "$spec" in *,*) mac=${spec#*,} ;; esac
	for n in /sys/class/net/*; do
		dev=${n##*/}
		[ "$dev" != lo ] || continue
		[ -z "$mac" ] || [ "$(cat "$n/address")" = "$mac" ] || continue
		ip link set "$dev" up && ip addr add "$addr" dev "$dev" && echo "sonix-test: $dev has $addr"
	done
done

if [ "$action" != noagent ] && [ -n "$agent_port" ]; then
	echo "sonix-test: starting the agent"
	case " $cmdline " in
	*" sonix.agent=respawn "*)
		# For tests of an agent that dies in a VM that goes on: start it
		# again 3 s after it exits, as a service manager would.
		(
			while :; do
				%[2]s
				echo "sonix-test: the agent exited ($?); starting it again in 3 s"
				sleep 3
				echo "sonix-test: starting the agent again"
			done
		) &
		;;
	*) %[2]s & ;;
	esac
	agent_pid=$!
	if [ -z "$action" ]; then
		wait $agent_pid
		echo "sonix-test: the agent exited ($?); powering off"
		sync
		poweroff -f
	fi
fi
[ -n "$action" ] || action=poweroff

case "$action" in
	poweroff) ;;
	panic)
		echo "sonix-test: triggering a kernel panic"
		echo 1 > /proc/sys/kernel/sysrq
		echo c > /proc/sysrq-trigger
		;;
	reboot)
		echo "sonix-test: rebooting"
		reboot -f
		;;
	noagent) ;;
	hang)
		echo "sonix-test: hanging"
		while :; do sleep 3600; done
		;;
	serve)
		# QEMU's user-mode network gives the guest 10.0.2.15.
		ip link set lo up
		ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
		mkdir -p /tmp/www
		echo sonix-test-http-ok > /tmp/www/index.html
		httpd -p 8080 -h /tmp/www
		echo "sonix-test: serving http on port 8080"
		while :; do sleep 3600; done
		;;
	shell)
		echo "sonix-test: starting a shell; exit it to power off"
		PS1='sonix-test# ' setsid cttyhack sh
		;;
	*)
		echo "sonix-test: unknown sonix.test=$action"
		;;
esac
echo "sonix-test: powering off"
sync
poweroff -f
`, bin, agent)
}
