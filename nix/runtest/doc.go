// Package runtest holds the test that runs the builder of the flake's
// lib.runTest (nix/run-test.nix, nix/run-test/builder.sh) for real,
// without Nix: in a sandbox shaped like Nix's build sandbox
// (scripts/nix-sandbox: bubblewrap, a non-root uid, no network, TMPDIR a
// private /build, HOME unwritable, /nix/store holding only the closure),
// with the environment nix/tests/run-test-env.nix evaluates from
// nix/run-test.nix, against the project's test system, under QEMU and the
// Rust virtiofsd. It has no code of its own; see runtest_test.go.
package runtest
