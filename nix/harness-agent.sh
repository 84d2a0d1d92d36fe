#!/usr/bin/env bash
# sonix-run-agent: the guest side of sonix-run's host-guest protocol
# (docs/harness.md), run by the guest module's sonix-run-agent.service.
#
# It finds the virtio console ports org.sonix-run.{ctl,stdout,stderr,stdin}
# by name under /sys/class/virtio-ports, opens each one once, says `ready 1`
# on ctl and then serves requests one at a time:
#
#   run NONCE ID STDIN CMD64  CMD64 decoded and given to `sh -c` in /, stdin
#                             from the stdin port (STDIN=port) or /dev/null,
#                             stdout and stderr on their ports; then
#                             `\0sonix-end NONCE ID\n` on both ports and
#                             `exit NONCE ID STATUS` on ctl
#   poweroff                  systemctl poweroff (poweroff -f if that fails)
#
# Anything else is ignored. A request that arrives while a command runs is
# read when the command has ended.
#
# The command:
#   - is CMD64 decoded byte for byte, trailing newlines included. NUL bytes
#     cannot be passed in an argument: bash drops them (with a warning in the
#     journal). CMD64 that is not valid base64 is not run: a line on the
#     stderr port says so and the status is 2;
#   - runs as the agent's user (root in the service), with the agent's
#     environment except for PATH, which is SONIX_AGENT_CMD_PATH, by default
#     /run/wrappers/bin:/run/current-system/sw/bin followed by the agent's
#     own PATH, and without systemd's per-service variables (INVOCATION_ID,
#     JOURNAL_STREAM, SYSTEMD_EXEC_PID). The nonce lives in an unexported
#     variable only, so it is not in the command's environment;
#   - gets no file descriptor of the agent's but 0, 1 and 2.
# The status is the shell's: 0 to 255, 128+N when the command was killed by
# signal N.
#
# Ports are held open for the agent's whole life (a virtio port can be open
# only once at a time, and a command's background processes may keep theirs).
# What such a process writes after its command's end marker reaches the host
# as the next command's output, or is lost.
#
# Exit status: 0 when no ctl port appears within SONIX_AGENT_WAIT seconds
# (a guest booted without the harness ports, e.g. plain `sonix-run
# ./result`) or when the ctl port goes away; 1 on errors (ctl there but
# another port missing, a port that cannot be opened or written).
#
# Environment, for tests (the defaults are what the guest has):
#   SONIX_AGENT_PORTS_DIR  /sys/class/virtio-ports
#   SONIX_AGENT_DEV_DIR    /dev (the port NAME in PORTS_DIR is DEV_DIR/NAME)
#   SONIX_AGENT_WAIT       10 (whole seconds to wait for the ports)
#   SONIX_AGENT_SHELL      /bin/sh
#   SONIX_AGENT_CMD_PATH   /run/wrappers/bin:/run/current-system/sw/bin:$PATH
#   SONIX_AGENT_POWEROFF   a program run instead of systemctl/poweroff
# They are removed from the command's environment.
set -euo pipefail
shopt -s nullglob

ports_dir=${SONIX_AGENT_PORTS_DIR:-/sys/class/virtio-ports}
dev_dir=${SONIX_AGENT_DEV_DIR:-/dev}
wait_s=${SONIX_AGENT_WAIT:-10}
cmd_shell=${SONIX_AGENT_SHELL:-/bin/sh}
cmd_path=${SONIX_AGENT_CMD_PATH:-/run/wrappers/bin:/run/current-system/sw/bin:$PATH}
poweroff_prog=${SONIX_AGENT_POWEROFF:-}
unset SONIX_AGENT_PORTS_DIR SONIX_AGENT_DEV_DIR SONIX_AGENT_WAIT \
	SONIX_AGENT_SHELL SONIX_AGENT_CMD_PATH SONIX_AGENT_POWEROFF

[[ $wait_s =~ ^[0-9]+$ ]] || wait_s=10

log() { printf 'sonix-run-agent: %s\n' "$*" >&2; }

# port[NAME] = device of the port named NAME, for the ports found so far.
declare -A port=()
scan_ports() {
	local f name dir
	port=()
	for f in "$ports_dir"/*/name; do
		name=
		# The file ends in a newline; a port without a name has an empty one.
		IFS= read -r name <"$f" || true
		[[ -n $name ]] || continue
		dir=${f%/name}
		[[ -e $dev_dir/${dir##*/} ]] || continue
		port[$name]=$dev_dir/${dir##*/}
	done
}

names=(org.sonix-run.ctl org.sonix-run.stdout org.sonix-run.stderr org.sonix-run.stdin)
all_found() {
	local n
	for n in "${names[@]}"; do
		[[ -n ${port[$n]:-} ]] || return 1
	done
}

# The ports usually exist before the service starts (virtio_console is
# loaded in the initrd), but a port's name arrives from the host after the
# port itself: poll for a while.
for ((i = 0; ; i++)); do
	scan_ports
	all_found && break
	((i < wait_s * 10)) || break
	sleep 0.1
done
ctl=${port[org.sonix-run.ctl]:-}
if [[ -z $ctl ]]; then
	log "no virtio port named org.sonix-run.ctl, so no harness to serve"
	exit 0
fi
for n in "${names[@]}"; do
	if [[ -z ${port[$n]:-} ]]; then
		log "found org.sonix-run.ctl ($ctl) but no port named $n"
		exit 1
	fi
done

# 3 ctl (both ways), 4 stdout, 5 stderr: open once, for good. The stdin
# port is opened for each command that reads it (docs/harness.md): the host
# waits for that open before it hangs up to signal the end of the input.
exec 4>"${port[org.sonix-run.stdout]}" 5>"${port[org.sonix-run.stderr]}" 3<>"$ctl"
log "ports: ctl ${ctl}, stdout ${port[org.sonix-run.stdout]}, stderr ${port[org.sonix-run.stderr]}, stdin ${port[org.sonix-run.stdin]}"

# Writes on a virtio port wait until the host is connected: ready goes out
# when the host is there to read it.
printf 'ready 1\n' >&3
log "ready"

# run_command NONCE ID STDIN CMD64
run_command() {
	local nonce=$1 id=$2 stdin=$3 cmd64=$4 cmd status=0
	# The x keeps command substitution from eating trailing newlines.
	if cmd=$(base64 -d <<<"$cmd64" 2>/dev/null && printf x); then
		cmd=${cmd%x}
		(
			cd / || exit 1
			export PATH=$cmd_path
			unset INVOCATION_ID JOURNAL_STREAM SYSTEMD_EXEC_PID
			if [[ $stdin == port ]]; then
				exec <"${port[org.sonix-run.stdin]}"
			else
				exec </dev/null
			fi
			# Redirections apply left to right: 1 and 2 onto the ports,
			# then the agent's own descriptors closed.
			exec "$cmd_shell" -c "$cmd" >&4 2>&5 3>&- 4>&- 5>&-
		) || status=$?
	else
		printf 'sonix-run-agent: the command of request %s is not valid base64\n' "$id" >&5 || true
		status=2
	fi
	# The markers, then the status: the host takes the status only once it
	# has both markers.
	printf '\0sonix-end %s %s\n' "$nonce" "$id" >&4 || log "request $id: cannot write the end marker on stdout"
	printf '\0sonix-end %s %s\n' "$nonce" "$id" >&5 || log "request $id: cannot write the end marker on stderr"
	if ! printf 'exit %s %s %s\n' "$nonce" "$id" "$status" >&3; then
		log "cannot write on $ctl"
		exit 1
	fi
}

power_off() {
	log "poweroff"
	if [[ -n $poweroff_prog ]]; then
		"$poweroff_prog" || log "$poweroff_prog failed"
		return 0
	fi
	if ! systemctl poweroff --no-block; then
		log "systemctl poweroff failed; poweroff -f"
		sync || true
		poweroff -f || log "poweroff -f failed"
	fi
}

while :; do
	if ! IFS=' ' read -r verb a b c d _ <&3; then
		# End of file: the host is not connected (a virtio port reads as
		# empty then), or went away in the middle of a line, which is
		# dropped. Wait for it to come back, unless the port is gone.
		if [[ ! -e $ctl ]]; then
			log "$ctl is gone"
			exit 0
		fi
		sleep 0.2
		continue
	fi
	case $verb in
	run)
		# NONCE and ID are echoed back: take them only when they are plain
		# words. CMD64 may be empty (an empty command).
		if [[ $a =~ ^[0-9A-Za-z]+$ && $b =~ ^[0-9]+$ && -n $c ]]; then
			run_command "$a" "$b" "$c" "$d"
		else
			log "ignored a malformed run request"
		fi
		;;
	poweroff)
		power_off
		;;
	*) ;;
	esac
done
