# A lib.runTest script (flake.nix's check example-harness runs it after the
# Go test of this directory): the same kind of checks, with the sonix-run
# verbs instead of the Go harness. It runs under bash with set -euo
# pipefail after nix/run-test/script-lib.sh, which gives `start NAME`
# (boot the system NAME as the VM NAME and wait for its agent), `stop
# NAME`, `addr NAME` and `system NAME`; a failing command fails the test,
# and the VMs' consoles are then in the test's artifacts.

start machine

# The guest runs the host's architecture, from a tmpfs root.
test "$(sonix-run exec machine -- uname -m)" = "$(uname -m)"
sonix-run exec machine -- sh -c 'grep -q "^[^ ]* / tmpfs " /proc/mounts'

# Statuses and streams come back as they are.
status=0
sonix-run exec machine -- sh -c 'echo to-out; echo to-err >&2; exit 7' >out 2>err || status=$?
test "$status" -eq 7
test "$(cat out)" = to-out
test "$(cat err)" = to-err

# Files in and out.
echo "from the host" >file
sonix-run cp file machine:/tmp/file
test "$(sonix-run exec machine -- cat /tmp/file)" = "from the host"

stop machine
