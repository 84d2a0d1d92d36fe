#!/usr/bin/env bash
# Runs the guest module's shell scripts (nix/guest-module.nix) for real, each
# in a throwaway root made of the host's /usr in a private mount namespace,
# with the host's util-linux, e2fsprogs and Nix standing in for the guest's:
#
#   state           on a loop device: an empty disk is formatted and bound on
#                   /sysroot/var and /sysroot/home; a second boot finds the
#                   files of the first; a disk with another signature is
#                   never formatted;
#   static-address  /proc/cmdline -> systemd-networkd files, bad values
#                   refused;
#   register-store  with no sonix-run-meta share: the build-time registration
#                   is loaded into a Nix database with nix-store --load-db,
#                   and the journal message says what is missing.
#
# usage: nix/tests/scripts-test.sh SCRIPTS.json
# SCRIPTS.json is `nix-instantiate --eval --strict --json nix/tests -A scripts`.
# Every script is also checked with bash -n, and with shellcheck when it is
# installed. Running them needs root (mount namespaces, loop devices, ext4
# mounts); without root only the static checks run, and the script says so.
set -euo pipefail

prog=scripts-test
[ $# -eq 1 ] || { echo "usage: $0 SCRIPTS.json" >&2; exit 2; }
json=$1

fail=0
say() { printf '%s: %s\n' "$prog" "$*"; }
check() { # CONDITION-STATUS NAME [DETAIL]
	if [ "$1" -eq 0 ]; then
		say "ok   $2"
	else
		say "FAIL $2${3:+: $3}"
		fail=1
	fi
}

work=$(mktemp -d "${TMPDIR:-/tmp}/sonix-scripts.XXXXXX")
loops=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local l
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# The scripts as NixOS writes them: `set -e`, then the text.
python3 - "$json" "$work" <<'PY'
import json, os, sys
scripts = json.load(open(sys.argv[1]))
for name, text in scripts.items():
    if name == "packagesRegistration":
        open(os.path.join(sys.argv[2], name), "w").write(text)
        continue
    with open(os.path.join(sys.argv[2], name + ".sh"), "w") as f:
        f.write("set -e\n\n" + text)
PY

for s in state static-address register-store; do
	out=$(bash -n "$work/$s.sh" 2>&1) && st=0 || st=$?
	check "$st" "$s: bash -n" "$out"
	if command -v shellcheck >/dev/null; then
		out=$(shellcheck -s bash -S warning "$work/$s.sh" 2>&1) && st=0 || st=$?
		check "$st" "$s: shellcheck" "$out"
	fi
done
command -v shellcheck >/dev/null || say "shellcheck is not installed: not run"

if [ "$(id -u)" -ne 0 ]; then
	say "not root: the scripts were not run (they need mount namespaces and loop devices)"
	exit "$fail"
fi

# The rest runs in a private mount namespace: every mount ends with it.
# shellcheck disable=SC2016 # expanded by the inner bash
exec_inner='
set -euo pipefail
work=$1 loop=$2 swaploop=$3
fail=0
say() { printf "scripts-test: %s\n" "$*"; }
check() {
	if [ "$1" -eq 0 ]; then say "ok   $2"; else say "FAIL $2${3:+: $3}"; fail=1; fi
}

# A root: a tmpfs with the host'"'"'s /usr and /etc, a minimal /dev, and the
# directories the scripts expect.
mkroot() { # DIR
	local r=$1 d n
	mkdir -p "$r"
	mount -t tmpfs none "$r"
	for d in usr etc; do
		mkdir "$r/$d"
		mount --rbind "/$d" "$r/$d"
	done
	for d in bin sbin lib lib32 lib64; do
		if [ -L "/$d" ]; then
			ln -s "$(readlink "/$d")" "$r/$d"
		elif [ -d "/$d" ]; then
			mkdir "$r/$d"
			mount --rbind "/$d" "$r/$d"
		fi
	done
	mkdir -p "$r/dev" "$r/proc" "$r/run" "$r/tmp" "$r/sysroot"
	mount -t tmpfs none "$r/dev"
	for n in null zero full urandom; do
		touch "$r/dev/$n"
		mount --bind "/dev/$n" "$r/dev/$n"
	done
}
# DEV becomes /dev/disk/by-id/virtio-sonix-state in root R.
attach() { # R DEV
	local r=$1 dev=$2
	touch "$r$dev"
	mount --bind "$dev" "$r$dev"
	mkdir -p "$r/dev/disk/by-id"
	ln -sfn "$dev" "$r/dev/disk/by-id/virtio-sonix-state"
}
run() { # R SCRIPT: runs it as the unit would, prints its output, returns its status
	cp "$work/$2" "$1/tmp/$2"
	chroot "$1" /bin/bash "/tmp/$2"
}

# --- state: first boot on an empty disk ---
r=$work/boot1
mkroot "$r"
mount -t proc proc "$r/proc"
attach "$r" "$loop"
out=$(run "$r" state.sh 2>&1) && st=0 || st=$?
check "$st" "state: first boot exits 0" "$out"
case $out in *"the state disk is empty; making an ext4 file system"*) st=0 ;; *) st=1 ;; esac
check "$st" "state: first boot formats the empty disk" "$out"
check "$([ "$(blkid -p -o value -s TYPE "$loop")" = ext4 ] && [ "$(blkid -p -o value -s LABEL "$loop")" = sonix-state ]; echo $?)" \
	"state: the disk is ext4, label sonix-state" "$(blkid -p "$loop" 2>&1)"
for d in var home; do
	check "$(mountpoint -q "$r/sysroot/$d"; echo $?)" "state: /sysroot/$d is a mount point"
done
check "$(mountpoint -q "$r/sysroot/sonix-state"; echo $?)" "state: the disk is mounted on /sysroot/sonix-state"
echo "written in boot 1" >"$r/sysroot/var/marker"
mkdir -p "$r/sysroot/home/user" && echo hello >"$r/sysroot/home/user/file"
check "$([ -f "$r/sysroot/sonix-state/var/marker" ]; echo $?)" "state: /var is the disk'"'"'s var directory"
umount -R "$r"

# --- state: second boot finds the first one'"'"'s files, formats nothing ---
r=$work/boot2
mkroot "$r"
mount -t proc proc "$r/proc"
attach "$r" "$loop"
out=$(run "$r" state.sh 2>&1) && st=0 || st=$?
check "$st" "state: second boot exits 0" "$out"
case $out in *making*) st=1 ;; *) st=0 ;; esac
check "$st" "state: second boot does not format" "$out"
check "$([ "$(cat "$r/sysroot/var/marker" 2>&1)" = "written in boot 1" ] && [ "$(cat "$r/sysroot/home/user/file" 2>&1)" = hello ]; echo $?)" \
	"state: files written in boot 1 are there in boot 2"
umount -R "$r"

# --- state: a disk with another signature is never formatted ---
r=$work/boot3
mkroot "$r"
mount -t proc proc "$r/proc"
attach "$r" "$swaploop"
before=$(blkid -p -o export "$swaploop")
out=$(run "$r" state.sh 2>&1) && st=0 || st=$?
check "$([ "$st" -ne 0 ]; echo $?)" "state: a swap-signed disk fails the unit" "$out"
check "$([ "$(blkid -p -o export "$swaploop")" = "$before" ]; echo $?)" "state: the swap-signed disk is untouched"
check "$(mountpoint -q "$r/sysroot/var"; [ $? -ne 0 ]; echo $?)" "state: nothing is bound on /sysroot/var"
umount -R "$r"

# --- static addresses from the kernel command line ---
addr() { # CMDLINE: runs the script in a fresh root; prints status, then each file
	local r=$work/net$RANDOM st
	mkroot "$r"
	printf "%s\n" "$1" >"$r/proc/cmdline"
	run "$r" static-address.sh >"$r/tmp/out" 2>&1 && st=0 || st=$?
	echo "status $st"
	for f in "$r"/run/systemd/network/*; do
		[ -e "$f" ] || continue
		echo "== ${f##*/}"
		cat "$f"
	done
	umount -R "$r"
}
got=$(addr "BOOT_IMAGE=x init=/nix/store/x/init sonix.ip=10.0.0.2/24,52:54:00:12:34:56 quiet sonix.ip=fd00::2/64")
want="status 0
== 10-sonix-run-ip-1.network
[Match]
MACAddress=52:54:00:12:34:56

[Network]
Address=10.0.0.2/24
LinkLocalAddressing=no
IPv6AcceptRA=no
== 10-sonix-run-ip-2.network
[Match]
Type=ether

[Network]
Address=fd00::2/64
LinkLocalAddressing=no
IPv6AcceptRA=no"
check "$([ "$got" = "$want" ]; echo $?)" "static-address: an IPv4 address by MAC and an IPv6 one for every NIC" "$got"
for bad in "sonix.ip=bogus" "sonix.ip=10.0.0.3/24,52:54:00:zz:34:56" "sonix.ip=10.1.2.3/33" "sonix.ip=10.0.0.4"; do
	got=$(addr "quiet $bad")
	check "$([ "$got" = "status 1" ]; echo $?)" "static-address: $bad refused, no file" "$got"
done

# --- register-store without the host'"'"'s share ---
r=$work/reg
mkroot "$r"
mount -t proc proc "$r/proc"
# A real store path and its registration, made with the host'"'"'s Nix in a
# store of its own, stands for the system'"'"'s packages.
store=$work/store
echo "a file in the store" >"$work/payload"
path=$(nix-store --store "$store" --option build-users-group "" --add "$work/payload" 2>/dev/null)
reg=$(cat "$work/packagesRegistration")
mkdir -p "$r$(dirname "$reg")" "$r/nix/var/nix"
nix-store --store "$store" --option build-users-group "" --dump-db "$path" >"$r$reg" 2>/dev/null
cp "$work/register-store.sh" "$r/tmp/"
out=$(chroot "$r" /bin/bash -c "PATH=/usr/sbin:/usr/bin:/sbin:/bin NIX_CONFIG=\"build-users-group =\" /bin/bash /tmp/register-store.sh" 2>&1 </dev/null) && st=0 || st=$?
check "$st" "register-store: exits 0 without the share" "$out"
case $out in *"the host passed no store registration (virtio-fs tag sonix-run-meta, file registration:"*"Nix in this VM knows only the system"*) st=0 ;; *) st=1 ;; esac
check "$st" "register-store: says what is missing" "$out"
valid=$(chroot "$r" /usr/bin/env NIX_CONFIG="build-users-group =" nix-store --check-validity "$path" 2>&1) && st=0 || st=$?
check "$st" "register-store: the registered path is valid in the guest database" "$valid"
umount -R "$r"

exit "$fail"
'

img=$work/state.img
swapimg=$work/swap.img
truncate -s 64M "$img"
truncate -s 16M "$swapimg"
mkswap -q "$swapimg" >/dev/null
loop=$(losetup --find --show "$img")
loops+=("$loop")
swaploop=$(losetup --find --show "$swapimg")
loops+=("$swaploop")

unshare --mount --propagation private bash -c "$exec_inner" inner "$work" "$loop" "$swaploop" && st=0 || st=$?
[ "$st" -eq 0 ] || fail=1
exit "$fail"
