# sonix-run tests as Nix derivations: the flake's lib.runTest and
# lib.buildGoTests (flake.nix passes the first argument set). A test is
# some NixOS systems and a Go test package using sonix-run's harness
# and/or a shell script using the sonix-run verbs; building the derivation
# runs it, under QEMU and the Rust virtiofsd, in Nix's build sandbox:
# unprivileged, without network, with only the build's inputs in
# /nix/store, so the guests' store (sonix-run shares /nix/store) is exactly
# the closure of the systems, the test and its tools. Remote builders,
# Hydra, buildbot-nix and nix-fast-build schedule it like any derivation
# (docs/ci.md).
#
#   checks.x86_64-linux.web = sonix-run.lib.runTest {
#     pkgs = nixpkgs.legacyPackages.x86_64-linux;
#     name = "web";
#     systems.server = self.nixosConfigurations.server;   # each gets the guest module
#     systems.client = { pkgs, ... }: { environment.systemPackages = [ pkgs.curl ]; };
#     goTest = { src = ./.; vendorHash = "sha256-..."; packages = [ "./tests/web" ]; };
#     script = ''
#       start server
#       sonix-run exec server -- systemctl is-system-running --wait
#     '';
#   };
#
# The derivation writes $out/junit.xml (one test case per Go test and
# subtest, the script one more), $out/test.log, $out/test.json (go test
# -json events), $out/artifacts/ (per failed test: each VM's console,
# commands and reproduce line) and $out/nix-support/hydra-build-products.
# A failed test fails the build, unless recordFailure = true, which
# succeeds with $out/nix-support/failed (Hydra's "failed with output").
# `passthru.interactive` boots the systems and leaves them reachable with
# `sonix-run shell NAME`.
{
  # pkgs -> the sonix-run package built with pkgs (flake.nix: callPackage).
  sonixRunFor,
  # The NixOS guest module (flake.nix: nixosModules.default).
  guestModule,
  # vz/vz.entitlements, to sign test binaries that boot VMs on macOS.
  entitlements ? ../vz/vz.entitlements,
}:

let
  # What a system's or a test's name may be: a Nix attribute name, a host
  # name, a VM name and part of a store path (harness.System checks the
  # same).
  validName = name: builtins.match "[A-Za-z0-9][A-Za-z0-9_-]{0,62}" name != null;

  # Go test binaries built with buildGoModule from a Go module: one per
  # package (of `packages`) that has tests, in $out/bin, listed with their
  # import paths in $out/share/sonix-run/go-tests. Every other argument is
  # buildGoModule's (src, vendorHash, modRoot, tags, ldflags, env, ...).
  buildGoTests =
    {
      pkgs,
      packages ? [ "./..." ],
      ...
    }@args:
    let
      inherit (pkgs) lib;
      isDarwin = pkgs.stdenv.hostPlatform.isDarwin;
    in
    pkgs.buildGoModule (
      removeAttrs args [
        "pkgs"
        "packages"
      ]
      // {
        pname = args.pname or "go-tests";
        version = args.version or "0";
        goTestPackages = packages;
        # A harness test starts QEMU and virtiofsd: on Linux nothing of it
        # needs cgo; on macOS the Virtualization.framework backend does.
        env = {
          CGO_ENABLED = if isDarwin then 1 else 0;
        }
        // (args.env or { });
        nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ lib.optionals isDarwin [ pkgs.darwin.sigtool ];
        buildInputs = (args.buildInputs or [ ]) ++ lib.optionals isDarwin [ pkgs.apple-sdk_15 ];
        buildPhase = ''
          runHook preBuild
          bash ${./run-test/build-go-tests.sh} "$out" $goTestPackages
          runHook postBuild
        '';
        # The tests run in the test's derivation, not here.
        doCheck = false;
        installPhase = ''
          runHook preInstall
          runHook postInstall
        '';
        # Virtualization.framework refuses a process without the
        # entitlement; sign after stripping, which would drop the signature.
        postFixup =
          (args.postFixup or "")
          + lib.optionalString isDarwin ''
            for t in $out/bin/*.test; do
              codesign --entitlements ${entitlements} -f -s - "$t"
            done
          '';
        meta = {
          description = "Go test binaries for sonix-run's lib.runTest";
        }
        // (args.meta or { });
      }
    );

  # test2json from the Go toolchain: turns a test binary's output into
  # `go test -json` events, which gotestsum reads.
  test2jsonFor =
    pkgs:
    pkgs.stdenvNoCC.mkDerivation {
      pname = "test2json";
      inherit (pkgs.go) version;
      nativeBuildInputs = [ pkgs.go ];
      dontUnpack = true;
      buildPhase = ''
        runHook preBuild
        export GOCACHE=$TMPDIR/go-cache GOPATH=$TMPDIR/go GOTOOLCHAIN=local CGO_ENABLED=0
        go build -trimpath -o $out/bin/test2json cmd/test2json
        runHook postBuild
      '';
      dontInstall = true;
      meta.mainProgram = "test2json";
    };

  runTest =
    {
      pkgs,
      name,
      # name -> a NixOS configuration (lib.nixosSystem's result), a NixOS
      # module (a function, an attribute set or a path), or a toplevel used
      # as it is (a derivation, or a string carrying one's context, such as
      # "${drv}": a bare path string would not be an input of the build).
      systems ? { },
      # buildGoModule's arguments plus `packages`, or lib.buildGoTests's
      # result.
      goTest ? null,
      # A bash script (set -euo pipefail) using the sonix-run verbs and the
      # functions of nix/run-test/script-lib.sh.
      script ? null,
      # Extra arguments for every Go test binary, e.g. [ "-test.run=TestWeb" ].
      testFlags ? [ ],
      # Seconds the whole test may take.
      timeout ? 3600,
      # Run without KVM (under TCG) where the builder has none.
      allowTCG ? false,
      # Record a failure in $out/nix-support/failed and succeed.
      recordFailure ? false,
      # Files to put in the test's working directory: relative path -> path.
      extraFiles ? { },
      sonix-run ? sonixRunFor pkgs,
    }:
    let
      inherit (pkgs) lib;
      platform = pkgs.stdenv.hostPlatform;

      # What the test adds to every NixOS system: the guest module, the
      # addresses harness.Network.Attach and the script's `start` give on
      # the command line, and the system's name as its host name.
      nodeModule =
        nodeName:
        { lib, ... }:
        {
          imports = [ guestModule ];
          sonix-run.staticAddress.enable = lib.mkDefault true;
          networking.hostName = lib.mkDefault nodeName;
        };

      toplevelOf =
        nodeName: s:
        if lib.isDerivation s || builtins.isString s then
          s
        else if s ? extendModules then
          (s.extendModules { modules = [ (nodeModule nodeName) ]; }).config.system.build.toplevel
        else if lib.isFunction s || builtins.isAttrs s || builtins.isPath s then
          (pkgs.nixos [
            (nodeModule nodeName)
            s
          ]).config.system.build.toplevel
        else
          throw "sonix-run lib.runTest ${name}: systems.${nodeName} is a ${builtins.typeOf s}; expected a NixOS configuration, a NixOS module or a toplevel";

      toplevels = lib.mapAttrs toplevelOf systems;

      goTests =
        if goTest == null then
          null
        else if lib.isDerivation goTest then
          goTest
        else
          buildGoTests (
            {
              inherit pkgs;
              pname = "${name}-go-tests";
            }
            // goTest
          );

      scriptFile = if script == null then null else pkgs.writeText "${name}-script.sh" script;

      badFiles = lib.filter (
        dest:
        dest == "" || lib.hasPrefix "/" dest || lib.elem ".." (lib.splitString "/" dest) || builtins.match ".*[[:space:]].*" dest != null
      ) (lib.attrNames extraFiles);

      test2json = test2jsonFor pkgs;

      tools = [
        pkgs.bash
        pkgs.coreutils
        pkgs.gotestsum
        test2json
        sonix-run
      ]
      ++ lib.optionals platform.isLinux [
        pkgs.qemu_kvm
        pkgs.virtiofsd
      ];

      features =
        if platform.isDarwin then
          [ "apple-virt" ]
        else
          [ "nixos-test" ] ++ lib.optional (!allowTCG) "kvm";

      # NAME TOPLEVEL pairs, for the script and the interactive driver.
      systemWords = lib.escapeShellArgs (builtins.concatLists (lib.mapAttrsToList (n: t: [ n "${t}" ]) toplevels));

      interactive = pkgs.writeShellScriptBin "sonix-run-test-${name}-interactive" ''
        export PATH=${lib.makeBinPath [ sonix-run pkgs.coreutils ]}''${PATH:+:$PATH}
        exec ${pkgs.bash}/bin/bash ${./run-test}/interactive.sh ${lib.escapeShellArg name} ${systemWords} -- "$@"
      '';
    in
    assert lib.assertMsg (validName name) "sonix-run lib.runTest: name \"${name}\": expected a letter or digit, then letters, digits, '-' or '_' (at most 63)";
    assert lib.assertMsg (lib.all validName (lib.attrNames systems)) "sonix-run lib.runTest ${name}: system names must be a letter or digit, then letters, digits, '-' or '_' (at most 63): ${toString (lib.attrNames systems)}";
    assert lib.assertMsg (goTest != null || script != null) "sonix-run lib.runTest ${name}: give goTest, script, or both";
    assert lib.assertMsg (badFiles == [ ]) "sonix-run lib.runTest ${name}: extraFiles names must be relative paths without '..' or spaces: ${toString badFiles}";
    assert lib.assertMsg (builtins.isInt timeout && timeout > 0) "sonix-run lib.runTest ${name}: timeout is a number of seconds";
    pkgs.stdenvNoCC.mkDerivation {
      name = "sonix-run-test-${name}";
      builder = "${pkgs.bash}/bin/bash";
      args = [ "${./run-test}/builder.sh" ];

      testName = name;
      # The tools, first on PATH: bash and coreutils for the scripts,
      # gotestsum and test2json for junit.xml, sonix-run, QEMU and the Rust
      # virtiofsd for the VMs.
      toolPath = lib.makeBinPath tools;
      sonixVirtiofsd = lib.optionalString platform.isLinux (lib.getExe pkgs.virtiofsd);
      # harness.System reads this (as $SONIX_SYSTEMS): name -> toplevel.
      # Naming the toplevels makes their closures the build's inputs.
      sonixSystems = builtins.toJSON (lib.mapAttrs (_: t: "${t}") toplevels);
      sonixSystemWords = systemWords;
      goTests = if goTests == null then "" else goTests;
      goVersion = if goTests == null then "" else goTests.go.version or pkgs.go.version;
      testScript = if scriptFile == null then "" else scriptFile;
      testFlags = lib.escapeShellArgs testFlags;
      testTimeout = toString timeout;
      inherit allowTCG recordFailure;
      extraFiles = lib.escapeShellArgs (builtins.concatLists (lib.mapAttrsToList (dest: src: [ dest "${src}" ]) extraFiles));

      requiredSystemFeatures = features;

      passthru = {
        inherit
          toplevels
          goTests
          interactive
          test2json
          ;
        script = scriptFile;
      };

      meta = {
        description = "sonix-run test ${name}";
        # Hydra's bound on the build: the test's own timeout stops it first
        # and still writes junit.xml.
        timeout = timeout + 300;
        platforms = lib.platforms.linux ++ lib.platforms.darwin;
      };
    };
in
{
  inherit runTest buildGoTests test2jsonFor;
}
