# Evaluation tests of the NixOS guest module (nix/guest-module.nix), the
# agent package (nix/agent.nix) and flake.nix, run by scripts/nix-eval-tests
# with nothing but nix-instantiate: a module system evaluates the module
# against ./nixos-stand-in.nix in place of NixOS and ./stand-in-pkgs.nix in
# place of nixpkgs' packages. Nothing is built. The module system is the
# project's own ./minilib unless `lib` is given (nixpkgs' lib, e.g.
# `--arg lib 'import /path/to/nixpkgs/lib'`); ./module-system-tests.nix,
# part of the tests, pins the semantics both must share.
#
#   nix-instantiate --eval --strict --json nix/tests -A failures   # [] when all pass
#   nix-instantiate --eval --strict --json nix/tests -A names
#   nix-instantiate --eval --strict --json nix/tests -A results.NAME
{
  lib ? import ./minilib,
}:

let
  pkgs = import ./stand-in-pkgs.nix { inherit lib; };

  # A configuration made of the stand-in NixOS, the guest module and `modules`.
  eval =
    modules:
    (lib.evalModules {
      modules = [
        ./nixos-stand-in.nix
        ../guest-module.nix
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
    }).config;

  ourAssertion = "sonix-run's guest module mounts the store with systemd in stage 1; do not set boot.initrd.systemd.enable = false.";

  # A host's own configuration (also built for real by flake.nix's checks).
  hostConfiguration = ./host-configuration.nix;

  host = eval [ hostConfiguration ];
  hostKeepingNfs = eval [
    hostConfiguration
    { sonix-run.keepFileSystems = [ "/mnt/nfs" ]; }
  ];
  inert = eval [
    hostConfiguration
    { sonix-run.enable = false; }
  ];
  plain = eval [ ];
  writable = eval [ { sonix-run.writableStore.enable = true; } ];
  noNix = eval [ { nix.enable = false; } ];
  noSystemdInitrd = eval [ { boot.initrd.systemd.enable = false; } ];
  renamedHarness = eval [ { sonix-run.harness.enable = false; } ];
  noState = eval [ { sonix-run.state.enable = false; } ];
  stateDirs = eval [
    {
      sonix-run.state.directories = [
        "/var/lib/docker"
        "/root"
        "/var"
      ];
    }
  ];
  badStateDirs = eval [
    {
      sonix-run.state.directories = [
        "/nix/var"
        "/tmp"
        "relative"
      ];
      fileSystems."/tmp".fsType = "tmpfs";
    }
  ];
  badStateMountPoint = eval [ { sonix-run.state.mountPoint = "/nix"; } ];
  staticAddress = eval [ { sonix-run.staticAddress.enable = true; } ];
  staticAddressWithoutNetworkd = eval [
    {
      sonix-run.staticAddress.enable = true;
      systemd.network.enable = false;
    }
  ];

  unit = cfg: name: cfg.systemd.services.${name}.unitConfig;
  initrdUnit = cfg: name: cfg.boot.initrd.systemd.services.${name}.unitConfig;
  words = s: lib.splitString " " s;
  blockDevices = lib.filter (line: lib.hasPrefix "/dev/" line || lib.hasPrefix "UUID=" line || lib.hasPrefix "LABEL=" line);
  agentPackage = cfg: cfg.sonix-run.agent.package.goModuleArgs;

  stateScript = cfg: cfg.boot.initrd.systemd.services.sonix-run-state.script;
  # The lines of a script that run mount or mkfs, in order.
  mountLines =
    script: lib.filter (l: builtins.match " *(mount|mkfs).*" l != null) (lib.splitString "\n" script);

  # flake.nix, with its one input replaced by `lib` and the stand-in
  # packages for each system.
  flakeSystems = [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  flake = (import ../../flake.nix).outputs {
    self = flake // {
      shortRev = "0000000";
    };
    nixpkgs = {
      inherit lib;
      legacyPackages = lib.genAttrs flakeSystems (system: import ./stand-in-pkgs.nix { inherit lib system; });
    };
  };
  flakeVendorHashLine =
    lib.filter (l: builtins.match "[[:space:]]*vendorHash[[:space:]]*=.*" l != null)
      (lib.splitString "\n" (builtins.readFile ../../flake.nix));

  tests =
    import ./module-system-tests.nix { inherit lib; }
    # lib.runTest (nix/run-test.nix) and the flake's example checks.
    // import ./run-test-tests.nix { inherit lib pkgs flake; }
    // {
    # --- a host's configuration boots -------------------------------------

    testHostFileSystemsLeftForTheVM = {
      expr = lib.attrNames host.fileSystems;
      expected = [
        "/"
        "/lib/modules"
        "/nix/store"
        "/srv/src"
        "/tmp"
      ];
    };
    testHostRootIsTmpfs = {
      expr = {
        inherit (host.fileSystems."/") device fsType;
      };
      expected = {
        device = "none";
        fsType = "tmpfs";
      };
    };
    testHostStoreFromVirtiofs = {
      expr = {
        inherit (host.fileSystems."/nix/store") device fsType;
      };
      expected = {
        device = "store";
        fsType = "virtiofs";
      };
    };
    testHostFstabWaitsForNoDevice = {
      expr = blockDevices host.system.build.fstab;
      expected = [ ];
    };
    testHostFstabHasNoSwap = {
      expr = lib.filter (lib.hasInfix " swap ") host.system.build.fstab;
      expected = [ ];
    };
    testHostInitrdMountsOnlyTheVMsOwn = {
      expr = map (l: lib.elemAt (words l) 1) host.system.build.initrdFstab;
      expected = [
        "/"
        "/lib/modules"
        "/nix/store"
      ];
    };
    testHostSwapResumeAndLuksDropped = {
      expr = {
        swap = host.swapDevices;
        resume = host.boot.resumeDevice;
        luks = host.boot.initrd.luks.devices;
      };
      expected = {
        swap = [ ];
        resume = "";
        luks = { };
      };
    };
    testHostBootLoadersOff = {
      expr = {
        grub = host.boot.loader.grub.enable;
        systemd-boot = host.boot.loader.systemd-boot.enable;
        extlinux = host.boot.loader.generic-extlinux-compatible.enable;
        limine = host.boot.loader.limine.enable;
      };
      expected = {
        grub = false;
        systemd-boot = false;
        extlinux = false;
        limine = false;
      };
    };
    testHostNoFailedAssertions = {
      expr = host.system.build.failedAssertions;
      expected = [ ];
    };
    testHostKernelModulesKept = {
      expr = lib.all (m: lib.elem m host.boot.initrd.availableKernelModules) [
        "nvme"
        "ahci"
        "virtiofs"
        "virtio_pci"
      ];
      expected = true;
    };
    testKeepFileSystemsKeepsNamedMount = {
      expr = hostKeepingNfs.fileSystems."/mnt/nfs".device;
      expected = "server:/export";
    };
    testKeepFileSystemsKeepsOnlyIt = {
      expr = lib.attrNames hostKeepingNfs.fileSystems;
      expected = [
        "/"
        "/lib/modules"
        "/mnt/nfs"
        "/nix/store"
        "/srv/src"
        "/tmp"
      ];
    };
    testDisabledModuleLeavesHostAlone = {
      expr = {
        fileSystems = lib.attrNames inert.fileSystems;
        root = inert.fileSystems."/".fsType;
        systemd-boot = inert.boot.loader.systemd-boot.enable;
        agent = inert.systemd.services ? sonix-run-agent;
      };
      expected = {
        fileSystems = [
          "/"
          "/boot"
          "/data"
          "/mnt/nfs"
          "/nix"
          "/srv/src"
          "/tmp"
        ];
        root = "ext4";
        systemd-boot = true;
        agent = false;
      };
    };
    testPlainSystemEvaluates = {
      expr = plain.system.build.toplevel;
      expected = "toplevel";
    };

    # --- systemd in stage 1 -------------------------------------------------

    testSystemdStage1OnByDefault = {
      expr = plain.boot.initrd.systemd.enable;
      expected = true;
    };
    testSystemdStage1OffGivesTheModulesAssertion = {
      expr = {
        enable = noSystemdInitrd.boot.initrd.systemd.enable;
        failed = noSystemdInitrd.system.build.failedAssertions;
      };
      expected = {
        enable = false;
        failed = [ ourAssertion ];
      };
    };
    testSystemdStage1OffDoesNotBuild = {
      expr = (builtins.tryEval noSystemdInitrd.system.build.toplevel).success;
      expected = false;
    };

    # --- Nix in the guest: the store registration -------------------------

    testReadOnlyStoreRegistersBeforeAgentAndDaemon = {
      expr = words (unit plain "sonix-run-register-store").Before;
      expected = [
        "nix-daemon.socket"
        "nix-daemon.service"
        "sonix-run-agent.service"
        "shutdown.target"
      ];
    };
    testReadOnlyStoreAgentAfterRegistration = {
      expr = {
        after = lib.elem "sonix-run-register-store.service" (words (unit plain "sonix-run-agent").After);
        wants = words (unit plain "sonix-run-agent").Wants;
      };
      expected = {
        after = true;
        wants = [ "sonix-run-register-store.service" ];
      };
    };
    testRegistrationStartsEarly = {
      expr = {
        defaultDependencies = (unit plain "sonix-run-register-store").DefaultDependencies;
        after = (unit plain "sonix-run-register-store").After;
        wantedBy = plain.systemd.services.sonix-run-register-store.wantedBy;
      };
      expected = {
        defaultDependencies = false;
        after = "local-fs.target";
        wantedBy = [ "multi-user.target" ];
      };
    };
    testRegistrationLoadsTheHostsFileThenFallsBack = {
      expr =
        let
          script = plain.systemd.services.sonix-run-register-store.script;
        in
        map (s: lib.hasInfix s script) [
          "mount -t virtiofs -o ro,nosuid,nodev,noexec sonix-run-meta \"$meta\""
          "nix-store --load-db < \"$meta/registration\""
          "nix-store --load-db < ${pkgs.closureInfo { rootPaths = [ plain.system.path ]; }}/registration"
          "Nix in this VM knows only the system's packages"
        ];
      expected = [
        true
        true
        true
        true
      ];
    };
    testWritableStoreAgentAfterRegistration = {
      expr = {
        agentAfter = lib.elem "sonix-run-register-store.service" (words (unit writable "sonix-run-agent").After);
        registerBefore = lib.elem "sonix-run-agent.service" (words (unit writable "sonix-run-register-store").Before);
        daemonAfter = lib.elem "nix-daemon.service" (words (unit writable "sonix-run-register-store").Before);
      };
      expected = {
        agentAfter = true;
        registerBefore = true;
        daemonAfter = true;
      };
    };
    testWritableStoreOverlay = {
      expr = {
        fileSystems = lib.attrNames writable.fileSystems;
        store = writable.fileSystems."/nix/store".fsType;
        options = writable.fileSystems."/nix/store".options;
      };
      expected = {
        fileSystems = [
          "/"
          "/lib/modules"
          "/nix/.ro-store"
          "/nix/.rw-store"
          "/nix/store"
        ];
        store = "overlay";
        options = [
          "x-initrd.mount"
          "x-systemd.requires-mounts-for=/sysroot/nix/.ro-store"
          "x-systemd.requires-mounts-for=/sysroot/nix/.rw-store/store"
          "x-systemd.requires-mounts-for=/sysroot/nix/.rw-store/work"
          "x-systemd.requires-mounts-for=/sysroot/nix/.ro-store"
          "x-systemd.requires-mounts-for=/sysroot/nix/.rw-store"
          "lowerdir=/sysroot/nix/.ro-store"
          "upperdir=/sysroot/nix/.rw-store/store"
          "workdir=/sysroot/nix/.rw-store/work"
        ];
      };
    };
    testWithoutNixNoRegistration = {
      expr = {
        service = noNix.systemd.services ? sonix-run-register-store;
        agentAfter = words (unit noNix "sonix-run-agent").After;
        failed = noNix.system.build.failedAssertions;
      };
      expected = {
        service = false;
        agentAfter = [
          "local-fs.target"
          "systemd-tmpfiles-setup.service"
        ];
        failed = [ ];
      };
    };

    # --- the agent ----------------------------------------------------------

    testAgentUnit = {
      expr =
        let
          u = unit plain "sonix-run-agent";
          s = plain.systemd.services.sonix-run-agent;
        in
        {
          inherit (u) DefaultDependencies IgnoreOnIsolate StartLimitIntervalSec;
          inherit (s.serviceConfig)
            ExecStart
            Restart
            User
            Type
            IgnoreSIGPIPE
            ;
          inherit (s) wantedBy restartIfChanged;
          path = s.environment.PATH;
          home = s.environment.HOME;
          conflicts = u.Conflicts;
        };
      expected = {
        DefaultDependencies = false;
        IgnoreOnIsolate = true;
        StartLimitIntervalSec = "0";
        ExecStart = "${plain.sonix-run.agent.package}/bin/sonix-run-agent";
        Restart = "always";
        User = "root";
        Type = "exec";
        IgnoreSIGPIPE = false;
        wantedBy = [
          "multi-user.target"
          "rescue.target"
          "emergency.target"
        ];
        restartIfChanged = false;
        path = "/run/wrappers/bin:/run/current-system/sw/bin";
        home = "/root";
        conflicts = "shutdown.target";
      };
    };
    testAgentUnitTextOrdersAfterRegistration = {
      expr = lib.hasInfix "\nAfter=local-fs.target systemd-tmpfiles-setup.service sonix-run-register-store.service\n" plain.systemd.services.sonix-run-agent.text;
      expected = true;
    };
    testAgentPackageFromSource = {
      expr =
        let
          a = agentPackage plain;
        in
        {
          inherit (a) pname subPackages doCheck;
          cgo = a.env.CGO_ENABLED;
          platforms = a.meta.platforms == lib.platforms.linux;
          mainProgram = a.meta.mainProgram;
        };
      expected = {
        pname = "sonix-run-agent";
        subPackages = [ "cmd/sonix-run-agent" ];
        doCheck = false;
        cgo = 0;
        platforms = true;
        mainProgram = "sonix-run-agent";
      };
    };
    testAgentVendorHashIsTheFlakes = {
      expr = [ "      vendorHash = \"${(agentPackage plain).vendorHash}\";" ];
      expected = flakeVendorHashLine;
    };
    testAgentPortModuleLoaded = {
      expr = plain.boot.kernelModules;
      expected = [ "virtio_console" ];
    };
    testHarnessEnableRenamedToAgentEnable = {
      expr = {
        agent = renamedHarness.systemd.services ? sonix-run-agent;
        warned = lib.any (lib.hasInfix "sonix-run.agent.enable") renamedHarness.warnings;
      };
      expected = {
        agent = false;
        warned = true;
      };
    };

    # --- persistent state ---------------------------------------------------

    testStateUnitIsConditionalOnTheKernelParameter = {
      expr =
        let
          u = initrdUnit plain "sonix-run-state";
        in
        {
          inherit (u)
            ConditionKernelCommandLine
            DefaultDependencies
            Requires
            RequiresMountsFor
            ;
          after = words u.After;
          before = u.Before;
          wantedBy = plain.boot.initrd.systemd.services.sonix-run-state.wantedBy;
        };
      expected = {
        ConditionKernelCommandLine = "sonix.state";
        DefaultDependencies = false;
        Requires = "dev-disk-by\\x2did-virtio\\x2dsonix\\x2dstate.device";
        RequiresMountsFor = "/sysroot";
        after = [
          "dev-disk-by\\x2did-virtio\\x2dsonix\\x2dstate.device"
          "sysroot.mount"
        ];
        before = "initrd-fs.target";
        wantedBy = [ "initrd-fs.target" ];
      };
    };
    testStateFormatsOnlyAnEmptyDisk = {
      expr =
        let
          script = stateScript plain;
        in
        map (s: lib.hasInfix s script) [
          "blkid -p \"$dev\" >/dev/null || status=$?"
          "  2)\n    echo \"sonix-run: the state disk is empty; making an ext4 file system on it\"\n    mkfs.ext4 -q -L sonix-state \"$dev\""
          "  0) ;;"
        ];
      expected = [
        true
        true
        true
      ];
    };
    testStateMountsDiskThenDefaultDirectories = {
      expr = mountLines (stateScript plain);
      expected = [
        "    mkfs.ext4 -q -L sonix-state \"$dev\""
        "mount \"$dev\" /sysroot/sonix-state"
        "mount --bind /sysroot/sonix-state/home /sysroot/home"
        "mount --bind /sysroot/sonix-state/var /sysroot/var"
      ];
    };
    testStateDirectoriesParentsFirst = {
      expr = lib.drop 2 (mountLines (stateScript stateDirs));
      expected = [
        "mount --bind /sysroot/sonix-state/root /sysroot/root"
        "mount --bind /sysroot/sonix-state/var /sysroot/var"
        "mount --bind /sysroot/sonix-state/var/lib/docker /sysroot/var/lib/docker"
      ];
    };
    testStateToolsInInitrd = {
      expr = {
        bin = map (p: p.name) plain.boot.initrd.systemd.initrdBin;
        blkid = plain.boot.initrd.systemd.extraBin.blkid;
        ext4 = plain.boot.initrd.supportedFilesystems.ext4;
        virtioBlk = lib.elem "virtio_blk" plain.boot.initrd.availableKernelModules;
      };
      expected = {
        bin = [ "e2fsprogs" ];
        blkid = "${pkgs.util-linux}/bin/blkid";
        ext4 = true;
        virtioBlk = true;
      };
    };
    testStateOff = {
      expr = {
        unit = noState.boot.initrd.systemd.services ? sonix-run-state;
        bin = noState.boot.initrd.systemd.initrdBin;
        blk = lib.elem "virtio_blk" noState.boot.initrd.availableKernelModules;
      };
      expected = {
        unit = false;
        bin = [ ];
        blk = false;
      };
    };
    testStateRejectsBadDirectories = {
      expr = badStateDirs.system.build.failedAssertions;
      expected = [
        "sonix-run.state.directories: \"/nix/var\" must be an absolute path without a trailing slash, outside /nix and not containing or inside sonix-run.state.mountPoint (/sonix-state)."
        "sonix-run.state.directories: \"relative\" must be an absolute path without a trailing slash, outside /nix and not containing or inside sonix-run.state.mountPoint (/sonix-state)."
        "sonix-run.state.directories: \"/tmp\" is also a mount point in fileSystems, which would hide the state disk's copy; drop one of them."
      ];
    };

    testStateRejectsMountPointOnNix = {
      expr = badStateMountPoint.system.build.failedAssertions;
      expected = [
        "sonix-run.state.mountPoint must be an absolute path outside /nix without a trailing slash, not \"/nix\"."
      ];
    };

    # --- static addresses for --vlan ----------------------------------------

    testStaticAddressOffByDefault = {
      expr = {
        service = plain.systemd.services ? sonix-run-static-address;
        networkd = plain.systemd.network.enable;
      };
      expected = {
        service = false;
        networkd = false;
      };
    };
    testStaticAddressUnit = {
      expr =
        let
          u = unit staticAddress "sonix-run-static-address";
        in
        {
          inherit (u) ConditionKernelCommandLine DefaultDependencies;
          before = words u.Before;
          wantedBy = staticAddress.systemd.services.sonix-run-static-address.wantedBy;
          networkd = staticAddress.systemd.network.enable;
          failed = staticAddress.system.build.failedAssertions;
        };
      expected = {
        ConditionKernelCommandLine = "sonix.ip";
        DefaultDependencies = false;
        before = [
          "systemd-networkd.service"
          "network-pre.target"
          "shutdown.target"
        ];
        wantedBy = [ "systemd-networkd.service" ];
        networkd = true;
        failed = [ ];
      };
    };
    testStaticAddressNeedsNetworkd = {
      expr = staticAddressWithoutNetworkd.system.build.failedAssertions;
      expected = [
        "sonix-run.staticAddress.enable writes systemd-networkd configuration; do not set systemd.network.enable = false."
      ];
    };

    # --- flake.nix ----------------------------------------------------------

    testFlakePackages = {
      expr = lib.mapAttrs (_: lib.attrNames) flake.packages;
      expected = {
        aarch64-darwin = [ "default" ];
        aarch64-linux = [
          "agent"
          "default"
        ];
        x86_64-darwin = [ "default" ];
        x86_64-linux = [
          "agent"
          "default"
        ];
      };
    };
    testFlakeAgentSharesVendorHash = {
      expr = lib.unique (
        map (s: flake.packages.${s}.agent.goModuleArgs.vendorHash) [
          "x86_64-linux"
          "aarch64-linux"
        ]
        ++ [ flake.packages.x86_64-linux.default.goModuleArgs.vendorHash ]
      );
      expected = [ (agentPackage plain).vendorHash ];
    };
    testFlakeAgentVersion = {
      expr = flake.packages.aarch64-linux.agent.goModuleArgs.version;
      expected = "0.1.0-0000000";
    };
    testFlakeCgoOnlyOnDarwin = {
      expr = lib.mapAttrs (_: p: p.default.goModuleArgs.env.CGO_ENABLED) flake.packages;
      expected = {
        aarch64-darwin = 1;
        aarch64-linux = 0;
        x86_64-darwin = 1;
        x86_64-linux = 0;
      };
    };
    testFlakeChecks = {
      expr = lib.mapAttrs (_: lib.attrNames) flake.checks;
      expected =
        let
          linux = [
            "agent"
            "example-harness"
            "example-multivm"
            "guest"
            "guest-host-configuration"
            "guest-writable-store"
            "package"
          ];
        in
        {
          aarch64-darwin = [ "package" ];
          aarch64-linux = linux;
          x86_64-darwin = [ "package" ];
          x86_64-linux = linux;
        };
    };
    testFlakeModuleIsTheGuestModule = {
      expr = flake.nixosModules.default.imports;
      expected = [ ../guest-module.nix ];
    };
  };

  results = lib.mapAttrs (
    _: t:
    {
      ok = t.expr == t.expected;
    }
    // lib.optionalAttrs (t.expr != t.expected) { inherit (t) expr expected; }
  ) tests;
in
{
  # The module's shell scripts as NixOS writes them into their units (after
  # `set -e`), for nix/tests/scripts-test.sh to run.
  scripts = {
    register-store = plain.systemd.services.sonix-run-register-store.script;
    state = stateScript plain;
    static-address = staticAddress.systemd.services.sonix-run-static-address.script;
    # The build-time registration the register-store script falls back to.
    packagesRegistration = "${pkgs.closureInfo { rootPaths = [ plain.system.path ]; }}/registration";
  };
  inherit results;
  names = lib.attrNames tests;
  failures = lib.filter (name: !results.${name}.ok) (lib.attrNames tests);
}
