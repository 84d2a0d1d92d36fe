# The interactive form of a lib.runTest test (passthru.interactive; run it
# with `nix run .#checks.SYSTEM.TEST.interactive`): boots the test's
# systems on the host, each as the VM of its name on one virtual LAN
# (addresses as in the test's script: 10.0.0.N), says how to reach them
# (`sonix-run shell NAME`, `sonix-run exec NAME -- CMD`), and keeps them
# until Ctrl-C, or until every one of them has been stopped
# (`sonix-run stop NAME`). Consoles go to files in a temporary directory,
# which it names.
#
# usage: interactive.sh TEST NAME TOPLEVEL [NAME TOPLEVEL...] -- [SONIX-RUN OPTION...]
#        (the OPTIONs, e.g. --memory 2G, go to every VM)
# shellcheck disable=SC2154,SC2034 # script-lib.sh reads and sets these
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

test=$1
shift
words=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	words+=("$1")
	shift
done
[ $# -gt 0 ] && shift
case "${1-}" in
	-h | --help)
		head -n 12 "${BASH_SOURCE[0]}" | tail -n 11 | cut -c3-
		exit 0
		;;
esac

sonixSystemWords=$(printf '%q ' "${words[@]}")
SONIX_SCRIPT_ARTIFACTS=$(mktemp -d "${TMPDIR:-/tmp}/sonix-run-test-$test.XXXXXX")
# A LAN of this session's own (at most 32 characters).
SONIX_SCRIPT_LAN=$(printf 'i%s-%s' "$$" "$test" | cut -c1-32)
export SONIX_SCRIPT_ARTIFACTS SONIX_SCRIPT_LAN

# shellcheck source=script-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/script-lib.sh"
trap sonix_stop_all EXIT
trap 'echo; echo "stopping the VMs"; exit 130' INT TERM

for name in "${_sonix_names[@]}"; do
	echo "booting $name ..."
	start "$name" "$@"
done

echo
echo "The systems of test $test are running, on the LAN $SONIX_SCRIPT_LAN:"
for name in "${_sonix_names[@]}"; do
	printf '  %-16s %-12s sonix-run shell %s\n' "$name" "$(addr "$name")" "$name"
done
echo "Consoles: $SONIX_SCRIPT_ARTIFACTS/NAME.console.log. Run commands with"
echo "\`sonix-run exec NAME -- CMD\`, copy with \`sonix-run cp\`; Ctrl-C stops them all."

# Until every VM has ended (each `sonix-run stop NAME` ends one).
for name in "${_sonix_names[@]}"; do
	wait "${_sonix_pid[$name]}" || true
done
echo "every VM has stopped"
