# lib.runTest (nix/run-test.nix) evaluated for a real run of its builder
# outside Nix (nix/runtest): with the stand-in packages, a test whose
# systems and Go test binaries are store paths the caller made, it gives
# what Nix would run, as JSON: the builder and its arguments, the
# environment (the derivation's attributes turned into strings as Nix turns
# them: true is "1", false and null are "", lists are joined with spaces,
# paths and derivations are their store paths) with $out, the required
# system features, and the store paths the caller must make for the
# builder's inputs ("store": path -> what it is), and the interactive
# driver's program.
#
#   nix-instantiate --eval --strict --json --store dummy:// \
#     nix/tests/run-test-env.nix --argstr spec '{"name": ..., ...}'
#
# spec: { name, systems (name -> toplevel path), goTests (a path of test
# binaries, or null), goVersion, script (text, or null), testFlags,
# timeout, allowTCG, recordFailure, extraFiles (dest -> path) }.
{ spec }:

let
  lib = import ./minilib;
  pkgs = import ./stand-in-pkgs.nix { inherit lib; };
  s = builtins.fromJSON spec;

  fake = name: outPath: attrs: {
    type = "derivation";
    inherit name outPath;
    meta = { };
  } // attrs;
  sonixRun = fake "sonix-run" "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" "sonix-run")}-sonix-run" { };

  runTests = import ../run-test.nix {
    sonixRunFor = _: sonixRun;
    guestModule = ../guest-module.nix;
  };
  drv = runTests.runTest {
    inherit pkgs;
    inherit (s)
      name
      systems
      testFlags
      timeout
      allowTCG
      recordFailure
      script
      ;
    extraFiles = s.extraFiles or { };
    goTest = if s.goTests == null then null else fake "go-tests" s.goTests { go.version = s.goVersion; };
  };

  toEnv =
    v:
    if v == null then
      ""
    else if builtins.isBool v then
      (if v then "1" else "")
    else if builtins.isInt v then
      toString v
    else if builtins.isList v then
      lib.concatMapStringsSep " " toEnv v
    else
      "${v}";

  attrs = drv.drvAttrs;
  runner = builtins.dirOf (builtins.head attrs.args);
  path = p: builtins.unsafeDiscardStringContext "${p}";
in
{
  builder = toEnv attrs.builder;
  args = map toEnv attrs.args;
  env = lib.mapAttrs (_: toEnv) attrs // {
    out = drv.outPath;
  };
  requiredSystemFeatures = attrs.requiredSystemFeatures;
  store = {
    ${path pkgs.bash} = "bash";
    ${path pkgs.coreutils} = "coreutils";
    ${path pkgs.qemu_kvm} = "qemu";
    ${path pkgs.virtiofsd} = "virtiofsd";
    ${path pkgs.gotestsum} = "gotestsum";
    ${path drv.test2json} = "test2json";
    ${path sonixRun} = "sonix-run";
    ${path runner} = "runner";
    ${path drv.interactive} = "interactive";
  }
  // lib.optionalAttrs (drv.script != null) {
    ${path drv.script} = "script";
  };
  scriptText = if drv.script == null then null else drv.script.text;
  # passthru.interactive: a writeShellScriptBin, bin/NAME holding the text.
  interactive = {
    name = drv.interactive.meta.mainProgram;
    text = builtins.unsafeDiscardStringContext drv.interactive.text;
  };
}
