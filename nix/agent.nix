# The guest agent, cmd/sonix-run-agent: the program in the guest that runs
# the host's commands (sonix-run --run, exec, cp, shell) over the virtio
# console port org.sonix-run.agent. A static Go binary with no cgo, so the
# same derivation builds for any Linux guest, native or cross.
#
# Called with callPackage: by the flake (packages.<linux system>.agent) and by
# nix/guest-module.nix for the guest's own pkgs, which is why it finds its
# source and its vendorHash by relative path rather than through the flake:
# a module imported by path has no flake inputs.
let
  # flake.nix holds the one vendorHash line that scripts/vendor-hash computes
  # and rewrites (its --check fails on more than one). Reading it from there
  # keeps this package and sonix-run's on the same value.
  flakeVendorHash =
    lib:
    let
      lines = lib.splitString "\n" (builtins.readFile ../flake.nix);
      hashes = lib.concatMap (
        line:
        let
          m = builtins.match "[[:space:]]*vendorHash[[:space:]]*=[[:space:]]*\"([^\"]*)\";.*" line;
        in
        if m == null then [ ] else m
      ) lines;
    in
    if lib.length hashes == 1 then
      lib.head hashes
    else
      throw "nix/agent.nix: flake.nix must have exactly one line `vendorHash = \"sha256-...\";` (the one scripts/vendor-hash maintains), found ${toString (lib.length hashes)}";
in
{
  lib,
  buildGoModule,
  version ? "0.1.0",
  # The whole repository: the agent is a package of the one Go module, so it
  # vendors the same dependencies as sonix-run itself.
  src ? lib.cleanSource ../.,
  vendorHash ? flakeVendorHash lib,
}:

buildGoModule {
  pname = "sonix-run-agent";
  inherit version src vendorHash;

  subPackages = [ "cmd/sonix-run-agent" ];
  ldflags = [
    "-s"
    "-w"
  ];
  # Static: the agent must run before anything else in the guest is ready,
  # and the test system's busybox stage 2 has no C library at all.
  env.CGO_ENABLED = 0;

  # The agent's tests run in CI (go test -race, host and guest halves in one
  # process); a guest's system build should not depend on them passing inside
  # the build sandbox.
  doCheck = false;

  meta = {
    description = "sonix-run's guest agent: runs the host's commands in the VM";
    homepage = "https://github.com/sonix-run/sonix-run";
    mainProgram = "sonix-run-agent";
    platforms = lib.platforms.linux;
  };
}
