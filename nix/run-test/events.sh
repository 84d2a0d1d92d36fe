# Runs a lib.runTest test (see builder.sh for the variables it reads) and
# writes its `go test -json` events on stdout, which gotestsum reads
# (--raw-command): each Go test binary under test2json, in the order of
# $goTests/share/sonix-run/go-tests, then the script, as one test case
# named "script" in the suite $testName (script-runner.sh). Each gets the
# time left of the test's timeout ($SONIX_TEST_DEADLINE). Its own messages
# go to stderr. Exit status: 0 when everything passed.
# shellcheck disable=SC2154 # the derivation's attributes come in the environment
set -uo pipefail

runner=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status=0
eval "flags=($testFlags)"

left() { echo $((SONIX_TEST_DEADLINE - $(date +%s))); }

if [ -n "$goTests" ]; then
	while read -r bin pkg; do
		secs=$(left)
		if [ "$secs" -le 0 ]; then
			echo "sonix-run-test: the test's timeout (${testTimeout}s) expired before $pkg ran" >&2
			status=1
			continue
		fi
		test2json -t -p "$pkg" "$goTests/bin/$bin" -test.v=test2json -test.timeout="${secs}s" "${flags[@]}" || status=1
	done <"$goTests/share/sonix-run/go-tests"
fi

if [ -n "$testScript" ]; then
	secs=$(left)
	if [ "$secs" -le 0 ]; then
		echo "sonix-run-test: the test's timeout (${testTimeout}s) expired before the script ran" >&2
		status=1
	else
		test2json -t -p "$testName" bash "$runner/script-runner.sh" "$secs" || status=1
	fi
fi
exit "$status"
