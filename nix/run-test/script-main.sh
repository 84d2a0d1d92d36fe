# Runs the test's script ($testScript) after script-lib.sh, with errexit,
# nounset and pipefail, tracing each command into
# $SONIX_SCRIPT_ARTIFACTS/commands.log (run by script-runner.sh). The VMs
# the script started are stopped when it ends, however it ends.
# shellcheck disable=SC2154 # the derivation's attributes come in the environment
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

# shellcheck source=script-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/script-lib.sh"
trap sonix_stop_all EXIT

exec {trace}>>"$SONIX_SCRIPT_ARTIFACTS/commands.log"
BASH_XTRACEFD=$trace
PS4='+ [$(date +%T)] '
set -x
# shellcheck disable=SC1090 # the test's own script
source "$testScript"
