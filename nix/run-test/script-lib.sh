# Functions for lib.runTest's scripts (sourced before the script) and its
# interactive driver. The systems are those of the test, by name:
#
#   start NAME [OPTION...]  boot system NAME in the background as the VM
#                           NAME (sonix-run --name NAME), on the test's
#                           virtual LAN with the address `addr NAME`, with
#                           sonix-run's OPTIONs, and return once its guest
#                           agent answers; then `sonix-run exec NAME -- CMD`,
#                           `shell`, `cp`, `forward` and `stop` reach it
#   stop NAME               power VM NAME off and wait until it has ended
#   addr NAME               its address on the LAN: 10.0.0.N, N being the
#                           system's place among the names, sorted, from 1
#                           (the guest module sets it: sonix-run.staticAddress)
#   system NAME             the system's toplevel
#   sonix_stop_all          stop every VM started here (run at exit)
#
# Each VM's console goes to $SONIX_SCRIPT_ARTIFACTS/NAME.console.log,
# sonix-run's own messages to NAME.sonix-run.log, and the command that
# boots it to NAME.reproduce.sh. Reads $sonixSystemWords (NAME TOPLEVEL
# ...), $SONIX_SCRIPT_ARTIFACTS, and $SONIX_SCRIPT_LAN (default
# sonix-test), $SONIX_START_TIMEOUT (seconds a VM may take to answer,
# default 600).

# shellcheck disable=SC2154 # sonixSystemWords comes from the environment
declare -A _sonix_toplevel=() _sonix_index=() _sonix_pid=()
_sonix_names=()
eval "_sonix_words=($sonixSystemWords)"
for ((_i = 0; _i + 1 < ${#_sonix_words[@]}; _i += 2)); do
	_sonix_toplevel[${_sonix_words[_i]}]=${_sonix_words[_i + 1]}
	_sonix_names+=("${_sonix_words[_i]}")
done
mapfile -t _sonix_sorted < <(printf '%s\n' "${_sonix_names[@]}" | LC_ALL=C sort)
for ((_i = 0; _i < ${#_sonix_sorted[@]}; _i++)); do
	[ -n "${_sonix_sorted[_i]}" ] && _sonix_index[${_sonix_sorted[_i]}]=$((_i + 1))
done
unset _i _sonix_words _sonix_sorted

_sonix_art=${SONIX_SCRIPT_ARTIFACTS:?}
_sonix_lan=${SONIX_SCRIPT_LAN:-sonix-test}

# The lines of a file, indented (coreutils and bash only: the test's tools).
_sonix_indent() {
	local line
	while IFS= read -r line || [ -n "$line" ]; do
		printf '  %s\n' "$line"
	done <"$1"
}

_sonix_known() {
	if [ -z "${_sonix_toplevel[$1]+set}" ]; then
		echo "sonix-run-test: no system named '$1' (the test's systems: ${_sonix_names[*]})" >&2
		return 1
	fi
}

system() {
	_sonix_known "$1" || return 1
	echo "${_sonix_toplevel[$1]}"
}

addr() {
	_sonix_known "$1" || return 1
	echo "10.0.0.${_sonix_index[$1]}"
}

start() {
	local name=${1:?start NAME [OPTION...]}
	shift
	_sonix_known "$name" || return 1
	if [ -n "${_sonix_pid[$name]-}" ] && kill -0 "${_sonix_pid[$name]}" 2>/dev/null; then
		echo "sonix-run-test: start $name: it is running already" >&2
		return 1
	fi
	local args=(--name "$name" --console-log "$_sonix_art/$name.console.log"
		--vlan "$_sonix_lan=$(addr "$name")/24" "$@" "${_sonix_toplevel[$name]}")
	printf '%q ' sonix-run "${args[@]}" >"$_sonix_art/$name.reproduce.sh"
	echo >>"$_sonix_art/$name.reproduce.sh"
	sonix-run "${args[@]}" </dev/null >/dev/null 2>>"$_sonix_art/$name.sonix-run.log" &
	_sonix_pid[$name]=$!

	# `exec` waits for the guest's agent once the VM's control socket
	# listens, which takes sonix-run a moment after it starts; until then
	# `exec` fails at once (the name is not running yet, or its socket is
	# not there yet), and this asks again, as long as the VM runs.
	local deadline=$(($(date +%s) + ${SONIX_START_TIMEOUT:-600})) status
	while :; do
		status=0
		sonix-run exec "$name" -- true </dev/null >/dev/null 2>"$_sonix_art/.$name.start" || status=$?
		[ "$status" -eq 0 ] && break
		if ! kill -0 "${_sonix_pid[$name]}" 2>/dev/null; then
			wait "${_sonix_pid[$name]}" && status=0 || status=$?
			echo "sonix-run-test: start $name: sonix-run ended (status $status) before the VM answered; its messages:" >&2
			_sonix_indent "$_sonix_art/$name.sonix-run.log" >&2
			return 1
		fi
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "sonix-run-test: start $name: the VM did not answer within ${SONIX_START_TIMEOUT:-600}s (sonix-run exec: status $status):" >&2
			_sonix_indent "$_sonix_art/.$name.start" >&2
			return 1
		fi
		sleep 0.1
	done
	rm -f "$_sonix_art/.$name.start"
}

stop() {
	local name=${1:?stop NAME}
	_sonix_known "$name" || return 1
	local pid=${_sonix_pid[$name]-}
	if [ -z "$pid" ]; then
		echo "sonix-run-test: stop $name: it was not started" >&2
		return 1
	fi
	_sonix_stop "$name" "$pid"
}

# Power VM $1 (sonix-run's pid $2) off: `sonix-run stop`, or, when that
# cannot reach it, SIGTERM to sonix-run, which presses the power button and
# then stops the VM; then wait for sonix-run to end.
_sonix_stop() {
	if kill -0 "$2" 2>/dev/null && ! sonix-run stop "$1" 2>>"$_sonix_art/$1.sonix-run.log"; then
		kill -TERM "$2" 2>/dev/null || true
	fi
	wait "$2" 2>/dev/null || true
	unset "_sonix_pid[$1]"
}

sonix_stop_all() {
	local name
	for name in "${!_sonix_pid[@]}"; do
		_sonix_stop "$name" "${_sonix_pid[$name]}"
	done
}
