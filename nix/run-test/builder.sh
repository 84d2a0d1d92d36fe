# The builder of lib.runTest's derivations (nix/run-test.nix), run by bash
# in Nix's build sandbox: no network, an unwritable HOME, TMPDIR=/build,
# only the inputs' closures in /nix/store, /dev/kvm only on builders with
# the kvm feature. It reads the derivation's attributes from the
# environment:
#
#   out                the output directory
#   testName           the test's name (the script's test suite)
#   toolPath           PATH: bash, coreutils, gotestsum, test2json,
#                      sonix-run, QEMU, virtiofsd
#   sonixVirtiofsd     the Rust virtiofsd ("" on macOS)
#   sonixSystems       JSON: system name -> toplevel (harness.System)
#   sonixSystemWords   the same as shell words: NAME TOPLEVEL ...
#   goTests            Go test binaries (lib.buildGoTests), or ""
#   goVersion          the Go they were built with (for junit.xml)
#   testScript         the script file, or ""
#   testFlags          shell words added to every test binary's arguments
#   testTimeout        seconds the whole test may take
#   allowTCG           "1": run under TCG where /dev/kvm is missing
#   recordFailure      "1": a failed test still succeeds, recorded
#   extraFiles         shell words: DEST SRC ... (relative to the work dir)
#
# and writes $out/junit.xml, $out/test.log, $out/test.json,
# $out/artifacts/ and $out/nix-support/hydra-build-products (and
# $out/nix-support/failed for a recorded failure). Exit status: 0 when
# every test passed (or a failure was recorded), 1 otherwise.
# shellcheck disable=SC2154 # the derivation's attributes come in the environment
set -euo pipefail

export PATH=$toolPath
runner=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "sonix-run-test: $*" >&2; }
die() { say "error: $*"; exit 1; }

start=$(date +%s)
mkdir -p "$out/artifacts" "$out/nix-support"
: "${TMPDIR:=${NIX_BUILD_TOP:-/tmp}}"
work=$TMPDIR/work
mkdir -p "$work"

# The extra files: copies, writable, as a checkout's would be.
eval "files=($extraFiles)"
for ((i = 0; i + 1 < ${#files[@]}; i += 2)); do
	dest=$work/${files[i]}
	mkdir -p "$(dirname "$dest")"
	cp -R -L "${files[i + 1]}" "$dest"
	chmod -R u+w "$dest"
done

export SONIX_SYSTEMS=$sonixSystems
export SONIX_ARTIFACTS=$out/artifacts
[ -z "$sonixVirtiofsd" ] || export SONIX_VIRTIOFSD=$sonixVirtiofsd
# gotestsum puts the Go version into junit.xml; there is no go to ask.
export GOVERSION=${goVersion:-unknown}

# KVM, or a clear word why not: a test that needs the kvm feature and lands
# on a builder without it must not quietly take ten times as long.
if [ "$(uname -s)" = Linux ]; then
	if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		say "/dev/kvm is usable: the VMs run under KVM (unless sonix-run's probe finds that KVM does not really run a guest here, which it then says)"
	elif [ -n "$allowTCG" ]; then
		if [ -e /dev/kvm ]; then why="/dev/kvm is not readable and writable here"; else why="this builder gives the build no /dev/kvm (no kvm system feature)"; fi
		say "$why: the VMs run under TCG, emulated, typically 5 to 30 times slower than under KVM (allowTCG = true)"
	else
		if [ -e /dev/kvm ]; then why="/dev/kvm is not readable and writable by the build user"; else why="there is no /dev/kvm in the build sandbox"; fi
		die "$why, but this test requires the kvm system feature (requiredSystemFeatures). Build it on a builder that has KVM and lists \"kvm\" in its system-features, or set allowTCG = true to run it under TCG (slow)"
	fi
fi

deadline=$((start + testTimeout))
export SONIX_TEST_DEADLINE=$deadline
say "running test $testName (timeout ${testTimeout}s)"

cd "$work"
status=0
gotestsum --format standard-verbose --no-color \
	--junitfile "$out/junit.xml" --jsonfile "$out/test.json" \
	--raw-command -- bash "$runner/events.sh" 2>&1 | tee "$out/test.log" || status=$?

[ -f "$out/junit.xml" ] || die "gotestsum wrote no junit.xml"

# Hydra shows these on the build's page.
{
	echo "file junit $out/junit.xml"
	echo "file testlog $out/test.log"
	echo "file json $out/test.json"
	echo "report artifacts $out/artifacts"
} >"$out/nix-support/hydra-build-products"

took=$(($(date +%s) - start))
if [ "$status" -eq 0 ]; then
	say "test $testName passed in ${took}s"
	exit 0
fi
summary="test $testName failed after ${took}s (gotestsum: status $status); junit.xml, test.log and each failed test's consoles, commands and reproduce lines are in $out"
if [ -n "$recordFailure" ]; then
	echo "$status" >"$out/nix-support/failed"
	say "$summary; recorded in nix-support/failed (recordFailure = true)"
	exit 0
fi
say "$summary, which Nix removes since the build failed: set recordFailure = true to keep it"
exit 1
