# Stand-in packages for the evaluation tests: just enough of nixpkgs' package
# set for nix/guest-module.nix, nix/agent.nix and flake.nix to evaluate.
# Each "package" is a derivation-shaped attribute set with a fixed store path
# and the arguments it was made from, so that tests can look at how a
# package was asked for (e.g. buildGoModule's subPackages) without building
# anything.
{ lib, system ? "x86_64-linux" }:

let
  fakeDrv =
    name: attrs:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
      drvPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" "drv-${name}")}-${name}.drv";
      meta = attrs.meta or { };
    }
    // attrs;

  pkgs = {
    inherit lib;
    # What flake.nix asks of the platform (nixpkgs' lib.systems.elaborate
    # knows far more).
    stdenv.hostPlatform = {
      inherit system;
      isLinux = lib.hasSuffix "-linux" system;
      isDarwin = lib.hasSuffix "-darwin" system;
    };

    callPackage =
      fn: args:
      let
        f = if lib.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (lib.functionArgs f) pkgs // args);

    buildGoModule =
      args:
      fakeDrv "${args.pname}-${args.version}" {
        goModuleArgs = args;
        meta = args.meta or { };
      };

    # Named after its roots, so that tests can tell whose closure it is.
    closureInfo =
      { rootPaths }:
      fakeDrv "closure-info-${lib.concatMapStringsSep "-" (p: p.name) rootPaths}" { inherit rootPaths; };

    writeShellScriptBin =
      name: text:
      fakeDrv name {
        inherit text;
        meta.mainProgram = name;
      };

    makeWrapper = fakeDrv "make-wrapper-hook" { };
    apple-sdk_15 = fakeDrv "apple-sdk-15" { };
    darwin.sigtool = fakeDrv "sigtool" { };
    qemu = fakeDrv "qemu" { meta.mainProgram = "qemu-system-x86_64"; };
    qemu_kvm = fakeDrv "qemu-kvm" { meta.mainProgram = "qemu-kvm"; };
    virtiofsd = fakeDrv "virtiofsd" { meta.mainProgram = "virtiofsd"; };

    # For nix/run-test.nix (lib.runTest): a derivation made with
    # mkDerivation keeps its arguments as attributes (passthru merged in),
    # and, for the tests, what it would pass to Nix as `drvAttrs`.
    stdenvNoCC.mkDerivation =
      args:
      let
        name = args.name or "${args.pname}-${args.version}";
      in
      fakeDrv name (
        removeAttrs args [ "passthru" ]
        // (args.passthru or { })
        // {
          drvAttrs = removeAttrs args [ "passthru" "meta" ] // { inherit name; };
        }
      );
    # Named after its text too, so that two scripts are two paths.
    writeText =
      name: text:
      fakeDrv name { inherit text; }
      // {
        outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" "${name}\n${text}")}-${name}";
      };
    runCommand =
      name: env: buildCommand:
      fakeDrv name (env // { inherit buildCommand; });
    # pkgs.nixos: a NixOS evaluation (here the stand-in, with what
    # ./run-test-nodes-stand-in.nix adds) of a module or a list of them;
    # its system.build merged into the result, as nixpkgs does.
    nixos =
      modules:
      let
        c = lib.evalModules {
          modules = [
            ./nixos-stand-in.nix
            ./run-test-nodes-stand-in.nix
            { _module.args.pkgs = pkgs; }
          ]
          ++ lib.toList modules;
        };
      in
      c.config.system.build // c;
    bash = fakeDrv "bash" { meta.mainProgram = "bash"; };
    gotestsum = fakeDrv "gotestsum" { meta.mainProgram = "gotestsum"; };
    go = fakeDrv "go-1.26.2" { version = "1.26.2"; };
    busybox = fakeDrv "busybox" { };
    htop = fakeDrv "htop" { };

    coreutils = fakeDrv "coreutils" { };
    findutils = fakeDrv "findutils" { };
    gnugrep = fakeDrv "gnugrep" { };
    gnused = fakeDrv "gnused" { };
    systemd = fakeDrv "systemd" { };
    util-linux = fakeDrv "util-linux" { };
    e2fsprogs = fakeDrv "e2fsprogs" { };
    nix = fakeDrv "nix" { } // {
      out = fakeDrv "nix" { };
    };
    system-path = fakeDrv "system-path" { };
  };
in
pkgs
