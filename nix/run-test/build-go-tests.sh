# Builds Go test binaries for lib.runTest (nix/run-test.nix): run by the
# buildPhase of lib.buildGoTests, inside a Go module whose dependencies are
# in place (buildGoModule's vendor directory, or the module cache), with go
# on PATH.
#
# usage: bash build-go-tests.sh OUT PACKAGE...
#
# PACKAGEs are `go test` package patterns (./..., ./tests). For each
# package that has tests it writes OUT/bin/N-NAME.test (N counts from 1,
# NAME is the package's name) and a line "N-NAME.test IMPORT-PATH" in
# OUT/share/sonix-run/go-tests, which the test's builder reads: the import
# path is the test suite's name in junit.xml. Packages without test files
# are left out; none at all is an error. $tags and $ldflags (as
# buildGoModule passes them) are used when set.
set -euo pipefail

out=$1
shift
[ $# -gt 0 ] || { echo "build-go-tests: no packages given" >&2; exit 2; }

flags=()
[ -z "${tags:-}" ] || flags+=("-tags=${tags// /,}")
[ -z "${ldflags:-}" ] || flags+=("-ldflags=$ldflags")

mkdir -p "$out/bin" "$out/share/sonix-run"
manifest=$out/share/sonix-run/go-tests
: >"$manifest"

# One line per package: import path, name, and whether it has tests.
list=$(go list "${flags[@]}" -f '{{.ImportPath}} {{.Name}} {{if or .TestGoFiles .XTestGoFiles}}tests{{else}}none{{end}}' "$@")
n=0
while read -r path name has; do
	[ "$has" = tests ] || continue
	n=$((n + 1))
	bin="$n-$name.test"
	echo "build-go-tests: $path -> bin/$bin" >&2
	go test -c "${flags[@]}" -o "$out/bin/$bin" "$path"
	printf '%s %s\n' "$bin" "$path" >>"$manifest"
done <<<"$list"
[ "$n" -gt 0 ] || { echo "build-go-tests: none of $* has test files" >&2; exit 1; }
