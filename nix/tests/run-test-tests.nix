# Evaluation tests of lib.runTest and lib.buildGoTests (nix/run-test.nix)
# and of the flake's example checks built with them, against the stand-in
# packages and NixOS (./stand-in-pkgs.nix, ./nixos-stand-in.nix,
# ./run-test-nodes-stand-in.nix): the derivation's builder, inputs,
# attributes and system features, the test binaries' build, the systems
# (each with the guest module), the script, the interactive driver, and
# the errors. Part of ./default.nix's tests. That the builder does what the
# attributes say is checked by running it (nix/runtest).
{
  lib,
  pkgs,
  flake,
}:

let
  darwinPkgs = import ./stand-in-pkgs.nix {
    inherit lib;
    system = "aarch64-darwin";
  };

  runTests = import ../run-test.nix {
    sonixRunFor = p: p.writeShellScriptBin "sonix-run" "";
    guestModule = ../guest-module.nix;
  };
  inherit (runTests) runTest buildGoTests;

  goTest = {
    src = ./.;
    vendorHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    packages = [ "./tests/web" ];
  };

  # One system of each kind: a configuration (what lib.nixosSystem gives:
  # it has extendModules), a module, and a toplevel used as it is.
  configuration = pkgs.nixos [ { networking.hostName = "named-by-its-owner"; } ];
  prebuilt = "/nix/store/00000000000000000000000000000000-prebuilt-toplevel";
  web = runTest {
    inherit pkgs goTest;
    name = "web";
    systems = {
      server = configuration;
      client =
        { pkgs, ... }:
        {
          environment.systemPackages = [ pkgs.htop ];
        };
      other = prebuilt;
    };
    script = "start server\nsonix-run exec server -- true\n";
    testFlags = [
      "-test.run=TestWeb"
      "-test.parallel=2"
    ];
    timeout = 600;
    extraFiles = {
      "testdata/page.html" = "/nix/store/11111111111111111111111111111111-page.html";
    };
  };
  tcg = runTest {
    inherit pkgs goTest;
    name = "web";
    allowTCG = true;
    recordFailure = true;
  };
  scriptOnly = runTest {
    inherit pkgs;
    name = "smoke";
    systems.machine = { };
    script = "start machine\n";
  };
  onDarwin = runTest {
    pkgs = darwinPkgs;
    inherit goTest;
    name = "web";
  };
  prebuiltTests = runTest {
    inherit pkgs;
    name = "web";
    goTest = web.goTests;
  };

  env = drv: drv.drvAttrs;
  # hasInfix for strings that name store paths (which a regular
  # expression may not).
  has = infix: s: lib.hasInfix (builtins.unsafeDiscardStringContext infix) (builtins.unsafeDiscardStringContext s);
  fails = x: !(builtins.tryEval (builtins.deepSeq x x)).success;
  split = s: lib.filter (w: w != "") (lib.splitString ":" s);
  toplevelConfig = drv: name: drv.toplevels.${name}.config;

  # The flake evaluated with a stand-in lib.nixosSystem, so that its example
  # checks evaluate through the stand-in NixOS.
  flakeSystems = [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  legacyPackages = lib.genAttrs flakeSystems (system: import ./stand-in-pkgs.nix { inherit lib system; });
  nixosSystem =
    { modules }:
    lib.evalModules {
      modules = [
        ./nixos-stand-in.nix
        ./run-test-nodes-stand-in.nix
        { _module.args.pkgs = legacyPackages.x86_64-linux; }
      ]
      ++ modules;
    };
  flakeWithNixos = (import ../../flake.nix).outputs {
    self = flakeWithNixos // {
      shortRev = "0000000";
    };
    nixpkgs = {
      lib = lib // {
        inherit nixosSystem;
      };
      inherit legacyPackages;
    };
  };
  exampleHarness = flakeWithNixos.checks.x86_64-linux.example-harness;
  exampleMultivm = flakeWithNixos.checks.x86_64-linux.example-multivm;
in
{
  # --- the derivation ---------------------------------------------------------

  testRunTestNeedsKvmAndNixosTest = {
    expr = web.requiredSystemFeatures;
    expected = [
      "nixos-test"
      "kvm"
    ];
  };
  testRunTestAllowTCGDropsKvm = {
    expr = tcg.requiredSystemFeatures;
    expected = [ "nixos-test" ];
  };
  testRunTestOnDarwinNeedsAppleVirt = {
    expr = {
      features = onDarwin.requiredSystemFeatures;
      virtiofsd = (env onDarwin).sonixVirtiofsd;
      cgo = onDarwin.goTests.goModuleArgs.env.CGO_ENABLED;
      signs = lib.hasInfix "codesign --entitlements" onDarwin.goTests.goModuleArgs.postFixup;
    };
    expected = {
      features = [ "apple-virt" ];
      virtiofsd = "";
      cgo = 1;
      signs = true;
    };
  };
  testRunTestBuilderIsTheScript = {
    expr = {
      inherit (env web) builder args name;
      exists = builtins.pathExists ../run-test/builder.sh;
    };
    expected = {
      builder = "${pkgs.bash}/bin/bash";
      args = [ "${../run-test}/builder.sh" ];
      name = "sonix-run-test-web";
      exists = true;
    };
  };
  # The attributes the builder reads (its header lists them): nothing more,
  # nothing less.
  testRunTestAttributes = {
    expr = lib.attrNames (env web);
    expected = [
      "allowTCG"
      "args"
      "builder"
      "extraFiles"
      "goTests"
      "goVersion"
      "name"
      "recordFailure"
      "requiredSystemFeatures"
      "sonixSystemWords"
      "sonixSystems"
      "sonixVirtiofsd"
      "testFlags"
      "testName"
      "testScript"
      "testTimeout"
      "toolPath"
    ];
  };
  testRunTestInputsAreTheTools = {
    expr = {
      path = split (env web).toolPath;
      virtiofsd = (env web).sonixVirtiofsd;
    };
    expected = {
      path = [
        "${pkgs.bash}/bin"
        "${pkgs.coreutils}/bin"
        "${pkgs.gotestsum}/bin"
        "${web.test2json}/bin"
        "${pkgs.writeShellScriptBin "sonix-run" ""}/bin"
        "${pkgs.qemu_kvm}/bin"
        "${pkgs.virtiofsd}/bin"
      ];
      virtiofsd = "${pkgs.virtiofsd}/bin/virtiofsd";
    };
  };
  testRunTestTest2jsonFromGo = {
    expr = {
      inherit (web.test2json) pname version;
      build = lib.hasInfix "go build -trimpath -o $out/bin/test2json cmd/test2json" web.test2json.buildPhase;
      go = web.test2json.nativeBuildInputs == [ pkgs.go ];
    };
    expected = {
      pname = "test2json";
      version = "1.26.2";
      build = true;
      go = true;
    };
  };
  testRunTestSettings = {
    expr = {
      inherit (env web)
        testName
        testFlags
        testTimeout
        allowTCG
        recordFailure
        extraFiles
        ;
      timeout = web.meta.timeout;
      tcg = {
        inherit (env tcg) allowTCG recordFailure testTimeout;
      };
    };
    expected = {
      testName = "web";
      testFlags = "'-test.run=TestWeb' '-test.parallel=2'";
      testTimeout = "600";
      allowTCG = false;
      recordFailure = false;
      extraFiles = "testdata/page.html /nix/store/11111111111111111111111111111111-page.html";
      timeout = 900;
      tcg = {
        allowTCG = true;
        recordFailure = true;
        testTimeout = "3600";
      };
    };
  };

  # --- the systems ------------------------------------------------------------

  testRunTestSystemsAreTheToplevels = {
    expr = builtins.fromJSON (env web).sonixSystems;
    expected = {
      server = "${web.toplevels.server}";
      client = "${web.toplevels.client}";
      other = prebuilt;
    };
  };
  testRunTestSystemWordsForTheScript = {
    expr = (env web).sonixSystemWords;
    expected = "client ${web.toplevels.client} other ${prebuilt} server ${web.toplevels.server}";
  };
  testRunTestEachSystemGetsTheGuestModule = {
    expr =
      map
        (
          name:
          let
            c = toplevelConfig web name;
          in
          {
            inherit name;
            agent = c.systemd.services ? sonix-run-agent;
            root = c.fileSystems."/".fsType;
            staticAddress = c.sonix-run.staticAddress.enable;
            hostName = c.networking.hostName;
          }
        )
        [
          "server"
          "client"
        ];
    expected = [
      {
        name = "server";
        agent = true;
        root = "tmpfs";
        staticAddress = true;
        # The configuration's own host name wins over the system's name.
        hostName = "named-by-its-owner";
      }
      {
        name = "client";
        agent = true;
        root = "tmpfs";
        staticAddress = true;
        hostName = "client";
      }
    ];
  };
  testRunTestModuleSystemKeepsItsSettings = {
    expr = map (p: p.name) (toplevelConfig web "client").environment.systemPackages;
    expected = [ "htop" ];
  };
  testRunTestSystemSettingBeatsTheDefaults = {
    expr =
      (toplevelConfig (runTest {
        inherit pkgs;
        name = "x";
        script = "";
        systems.a = {
          sonix-run.staticAddress.enable = false;
        };
      }) "a").sonix-run.staticAddress.enable;
    expected = false;
  };

  # --- the Go tests and the script --------------------------------------------

  testBuildGoTests = {
    expr =
      let
        a = web.goTests.goModuleArgs;
      in
      {
        inherit (a)
          pname
          version
          goTestPackages
          doCheck
          vendorHash
          src
          ;
        cgo = a.env.CGO_ENABLED;
        build = has "bash ${../run-test/build-go-tests.sh} \"$out\" $goTestPackages" a.buildPhase;
        installs = lib.hasInfix "runHook postInstall" a.installPhase;
      };
    expected = {
      pname = "web-go-tests";
      version = "0";
      goTestPackages = [ "./tests/web" ];
      doCheck = false;
      vendorHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
      src = ./.;
      cgo = 0;
      build = true;
      installs = true;
    };
  };
  testBuildGoTestsKeepsBuildGoModulesArguments = {
    expr =
      let
        a =
          (buildGoTests {
            inherit pkgs;
            src = ./.;
            vendorHash = null;
            modRoot = "go";
            tags = [ "integration" ];
            env.GOEXPERIMENT = "x";
          }).goModuleArgs;
      in
      {
        inherit (a) modRoot tags goTestPackages;
        env = a.env;
      };
    expected = {
      modRoot = "go";
      tags = [ "integration" ];
      goTestPackages = [ "./..." ];
      env = {
        CGO_ENABLED = 0;
        GOEXPERIMENT = "x";
      };
    };
  };
  testRunTestPrebuiltGoTests = {
    expr = {
      goTests = (env prebuiltTests).goTests == web.goTests;
      goVersion = (env prebuiltTests).goVersion;
    };
    expected = {
      goTests = true;
      goVersion = "1.26.2";
    };
  };
  testRunTestScriptFile = {
    expr = {
      file = (env web).testScript == web.script;
      inherit (web.script) name text;
      noGoTests = (env scriptOnly).goTests;
    };
    expected = {
      file = true;
      name = "web-script.sh";
      text = "start server\nsonix-run exec server -- true\n";
      noGoTests = "";
    };
  };

  # --- the interactive form ---------------------------------------------------

  testRunTestInteractive = {
    expr =
      let
        i = web.interactive;
      in
      {
        inherit (i) name;
        main = i.meta.mainProgram;
        runs = has "${pkgs.bash}/bin/bash ${../run-test}/interactive.sh web client ${web.toplevels.client} other ${prebuilt} server ${web.toplevels.server} -- \"$@\"" i.text;
      };
    expected = {
      name = "sonix-run-test-web-interactive";
      main = "sonix-run-test-web-interactive";
      runs = true;
    };
  };

  # --- what it refuses --------------------------------------------------------

  testRunTestRefusals = {
    expr = map fails [
      (runTest {
        inherit pkgs goTest;
        name = "two words";
      }).drvAttrs
      (runTest {
        inherit pkgs goTest;
        name = "t";
        systems."a.b" = { };
      }).drvAttrs
      (runTest {
        inherit pkgs;
        name = "nothing-to-run";
      }).drvAttrs
      (runTest {
        inherit pkgs goTest;
        name = "t";
        extraFiles."../escape" = ./.;
      }).drvAttrs
      (runTest {
        inherit pkgs goTest;
        name = "t";
        timeout = "1h";
      }).drvAttrs
      (runTest {
        inherit pkgs goTest;
        name = "t";
        systems.a = 42;
      }).sonixSystems
      # and one that is fine
      (runTest {
        inherit pkgs goTest;
        name = "t";
      }).drvAttrs
    ];
    expected = [
      true
      true
      true
      true
      true
      true
      false
    ];
  };

  # --- the flake --------------------------------------------------------------

  testFlakeLib = {
    expr = lib.attrNames flake.lib;
    expected = [
      "buildGoTests"
      "runTest"
    ];
  };
  testFlakeExampleChecks = {
    expr = {
      features = map (c: c.requiredSystemFeatures) [
        exampleHarness
        exampleMultivm
      ];
      harnessSystems = lib.attrNames (builtins.fromJSON (env exampleHarness).sonixSystems);
      multivmSystems = lib.attrNames (builtins.fromJSON (env exampleMultivm).sonixSystems);
      harnessPackages = exampleHarness.goTests.goModuleArgs.goTestPackages;
      multivmPackages = exampleMultivm.goTests.goModuleArgs.goTestPackages;
      vendorHash = lib.unique [
        exampleHarness.goTests.goModuleArgs.vendorHash
        exampleMultivm.goTests.goModuleArgs.vendorHash
        flakeWithNixos.packages.x86_64-linux.default.goModuleArgs.vendorHash
      ];
      script = exampleHarness.script.text == builtins.readFile ../../examples/harness/smoke.sh;
      multivmScript = (env exampleMultivm).testScript;
      timeouts = map (c: (env c).testTimeout) [
        exampleHarness
        exampleMultivm
      ];
    };
    expected = {
      features = [
        [
          "nixos-test"
          "kvm"
        ]
        [
          "nixos-test"
          "kvm"
        ]
      ];
      harnessSystems = [ "machine" ];
      multivmSystems = [
        "client"
        "server"
      ];
      harnessPackages = [ "./examples/harness" ];
      multivmPackages = [ "./examples/multivm" ];
      vendorHash = [ flakeWithNixos.packages.x86_64-linux.default.goModuleArgs.vendorHash ];
      script = true;
      multivmScript = "";
      timeouts = [
        "1200"
        "1800"
      ];
    };
  };
  testFlakeExampleSystems = {
    expr =
      let
        c = toplevelConfig exampleMultivm;
      in
      map
        (name: {
          agent = (c name).systemd.services ? sonix-run-agent;
          staticAddress = (c name).sonix-run.staticAddress.enable;
          busybox = map (p: p.name) (c name).environment.systemPackages;
          hostName = (c name).networking.hostName;
          firewall = (c name).networking.firewall.enable;
        })
        [
          "server"
          "client"
        ];
    expected =
      let
        one = {
          agent = true;
          staticAddress = true;
          busybox = [
            "busybox-binary"
            "htop"
          ];
          hostName = "vm";
          firewall = false;
        };
      in
      [
        one
        one
      ];
  };
  testFlakeExampleToolsAreTheFlakesPackage = {
    expr = lib.elem "${flakeWithNixos.packages.x86_64-linux.default}/bin" (split (env exampleHarness).toolPath);
    expected = true;
  };

  # --- the module system: extendModules ---------------------------------------

  testExtendModulesAddsDefinitions = {
    expr =
      let
        base = lib.evalModules {
          modules = [
            {
              options.xs = lib.mkOption {
                type = lib.types.listOf lib.types.str;
                default = [ ];
              };
              options.name = lib.mkOption { type = lib.types.str; };
            }
            {
              xs = [ "base" ];
              name = lib.mkDefault "default";
            }
          ];
        };
        extended = base.extendModules {
          modules = [
            {
              xs = [ "added" ];
              name = "set";
            }
          ];
        };
      in
      {
        base = base.config;
        extended = extended.config;
        again = (extended.extendModules { modules = [ { xs = [ "third" ]; } ]; }).config.xs;
      };
    expected = {
      base = {
        xs = [ "base" ];
        name = "default";
      };
      extended = {
        xs = [
          "added"
          "base"
        ];
        name = "set";
      };
      again = [
        "third"
        "added"
        "base"
      ];
    };
  };
}
