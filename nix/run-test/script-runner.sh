# Runs a lib.runTest script as one test case named "script", framed as a
# Go test binary run with -test.v=test2json frames its output (a ^V before
# each framing line), so that test2json (events.sh) makes it `go test -json`
# events: the script's output is the case's output, and a failure carries
# the last console lines of each VM the script started.
#
# usage: bash script-runner.sh SECONDS   (the time the script may take)
#
# The script runs in bash with set -euo pipefail, in the working directory,
# after nix/run-test/script-lib.sh (start, stop, addr, system); every
# command it runs is traced into $SONIX_ARTIFACTS/script/commands.log. The
# artifacts (each VM's console, sonix-run messages and reproduce line) are
# kept only when it fails.
set -uo pipefail

runner=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secs=$1
art=$SONIX_ARTIFACTS/script
mkdir -p "$art"
export SONIX_SCRIPT_ARTIFACTS=$art

mark=$'\026'
ms() { date +%s%3N; }
begin=$(ms)
printf '%s=== RUN   script\n' "$mark"

# timeout puts the script and everything it starts in a process group of
# their own, and TERMs that group when the time is up: each VM's sonix-run
# powers it off.
timeout --kill-after=30 "$secs" bash "$runner/script-main.sh" 2>&1
status=$?
if [ "$status" -eq 124 ]; then
	echo "the script did not end within the time left of the test's timeout (${secs}s) and was stopped"
fi

elapsed=$(($(ms) - begin))
took=$(printf '%d.%02d' $((elapsed / 1000)) $((elapsed % 1000 / 10)))
if [ "$status" -eq 0 ]; then
	rm -rf "$art"
	printf '%s--- PASS: script (%ss)\n%sPASS\n' "$mark" "$took" "$mark"
	exit 0
fi

echo "the script failed with status $status"
shopt -s nullglob
for log in "$art"/*.console.log; do
	vm=$(basename "$log" .console.log)
	echo "last console lines of VM $vm ($log):"
	tail -n 40 "$log" | while IFS= read -r line || [ -n "$line" ]; do printf '  %s\n' "$line"; done
done
echo "artifacts (consoles, sonix-run messages, commands, reproduce lines): $art"
printf '%s--- FAIL: script (%ss)\n%sFAIL\n' "$mark" "$took" "$mark"
exit 1
