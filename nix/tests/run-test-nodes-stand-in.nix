# What the evaluation tests of lib.runTest (nix/tests/run-test-tests.nix)
# add to the stand-in NixOS (./nixos-stand-in.nix): the options that
# nix/run-test.nix and the example configuration (examples/flake) set,
# declared as NixOS declares them (nixos/modules/tasks/network-interfaces.nix,
# nixos/modules/services/networking/firewall.nix,
# nixos/modules/config/system-path.nix, nixos/modules/misc/version.nix,
# nixos/modules/misc/nixpkgs.nix; their types simplified), and a toplevel
# named after the host name, as NixOS names it (nixos-system-HOSTNAME-...),
# so that tests can tell two systems apart.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  failed = config.system.build.failedAssertions;
in
{
  options = {
    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };
    networking.firewall.enable = mkOption {
      type = types.bool;
      default = true;
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    system.stateVersion = mkOption {
      type = types.str;
      default = "26.05";
    };
    nixpkgs.hostPlatform = mkOption {
      type = types.unspecified;
    };
  };

  config.system.build.toplevel = lib.mkForce (
    if failed != [ ] then
      throw "\nFailed assertions:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failed}"
    else
      {
        type = "derivation";
        name = "nixos-system-${config.networking.hostName}";
        outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" config.networking.hostName)}-nixos-system-${config.networking.hostName}";
        # What the tests look at: the configuration it was built from.
        inherit config;
      }
  );
}
