package testsystem

import (
	"fmt"
	"strings"
)

// busyboxApplets are the applet links created next to busybox, both in the
// store and in the initrd. All exist in Debian's busybox-static 1.35.
var busyboxApplets = []string{
	"[", "ash", "awk", "basename", "cat", "chmod", "chroot", "cp", "cttyhack",
	"cut", "date", "df", "dirname", "dmesg", "du", "echo", "env", "false",
	"find", "free", "grep", "halt", "head", "hostname", "id", "insmod", "kill",
	"less", "ln", "ls", "lsmod", "mkdir", "mknod", "modinfo", "modprobe",
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

// stage1Script is the initrd's /init. It runs under busybox sh as PID 1.
// modules are paths inside the initrd, in load order.
func stage1Script(modules []string) string {
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
`)
	for _, m := range modules {
		fmt.Fprintf(&b, "load %s\n", shQuote(m))
	}
	b.WriteString(`
init=
for arg in $(cat /proc/cmdline); do
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
// bin is the guest path of the busybox bin directory in the store.
func stage2Script(bin string) string {
	return fmt.Sprintf(`#!%[1]s/sh
# sonix-run test system, stage 2: report what the guest sees, then do what
# the kernel parameter sonix.test= asks (poweroff, panic, reboot, hang,
# serve, shell).
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

cmdline=$(cat /proc/cmdline)
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

# The guest side of sonix-run's host-guest protocol (docs/harness.md): when
# the ports are there, serve run requests until asked to power off.
port() {
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return 0; }
	done
	return 1
}
serve_agent() {
	ctl=$(port org.sonix-run.ctl) || return 1
	out=$(port org.sonix-run.stdout) && err=$(port org.sonix-run.stderr) && in=$(port org.sonix-run.stdin) || {
		echo "sonix-test: agent: ports missing"
		return 1
	}
	echo "sonix-test: agent ready on $ctl"
	exec 3<>"$ctl"
	echo "ready 1" >&3
	while read -r verb nonce id stdin cmd64 <&3; do
		case "$verb" in
			run)
				src=/dev/null
				[ "$stdin" = port ] && src=$in
				# Run in a subshell from /: the command gets neither the nonce
				# (not exported) nor the agent's file descriptors.
				(cd / && exec 3>&- && sh -c "$(echo "$cmd64" | base64 -d)") <"$src" >"$out" 2>"$err"
				status=$?
				printf '\0sonix-end %%s %%s\n' "$nonce" "$id" >"$out"
				printf '\0sonix-end %%s %%s\n' "$nonce" "$id" >"$err"
				echo "exit $nonce $id $status" >&3
				;;
			poweroff)
				return 0
				;;
		esac
	done
}
# sonix.test=noagent: a system without an agent, for sonix-run's boot-failure case.
case " $(cat /proc/cmdline) " in
	*" sonix.test=noagent "*) noagent=1 ;;
	*) noagent= ;;
esac
if [ -z "$noagent" ] && [ -e /sys/class/virtio-ports ] && port org.sonix-run.ctl >/dev/null; then
	serve_agent
	echo "sonix-test: powering off"
	sync
	poweroff -f
fi

action=poweroff
set -f
for arg in $cmdline; do
	case "$arg" in
		sonix.test=*) action="${arg#sonix.test=}" ;;
	esac
done
set +f

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
`, bin)
}
