{
  description = "sonix-run: boot a built NixOS system from its boot.json, without a disk image";

  # One input. The lock file pins its revision; `nix flake update` moves it.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      linuxSystems = lib.filter (lib.hasSuffix "-linux") systems;

      # forAllSystems (system: pkgs: ...) -> { x86_64-linux = ...; ... }
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      version = "0.1.0-${self.shortRev or self.dirtyShortRev or "dirty"}";

      # Hash of the `go mod vendor` tree, shared by sonix-run and its guest
      # agent (one Go module). `scripts/vendor-hash --update` rewrites this
      # line; CI runs `scripts/vendor-hash --check`; nix/agent.nix reads it
      # from here when the guest module is imported by path.
      vendorHash = "sha256-jchuUznJ/dJiOaHXoeca0Qe1DCt1jRzLutdXonR0hbQ=";

      # The package, as a function for callPackage, so that users can swap a
      # dependency with .override, e.g. the full QEMU to boot guests of the
      # other architecture under TCG:
      #   sonix-run.packages.x86_64-linux.default.override { qemu = pkgs.qemu; }
      package =
        {
          lib,
          stdenv,
          buildGoModule,
          makeWrapper,
          qemu,
          virtiofsd,
          apple-sdk_15,
          darwin,
        }:
        buildGoModule {
          pname = "sonix-run";
          inherit version;
          # The flake's own tree: the files git tracks.
          src = ./.;
          inherit vendorHash;

          subPackages = [ "cmd/sonix-run" ];
          ldflags = [ "-s" "-w" ];

          # The Virtualization.framework backend is cgo; on Linux nothing is.
          env.CGO_ENABLED = if stdenv.hostPlatform.isDarwin then 1 else 0;

          nativeBuildInputs =
            lib.optionals stdenv.hostPlatform.isLinux [ makeWrapper ]
            ++ lib.optionals stdenv.hostPlatform.isDarwin [ darwin.sigtool ];
          buildInputs = lib.optionals stdenv.hostPlatform.isDarwin [ apple-sdk_15 ];

          # Linux: QEMU and the Rust virtiofsd from nixpkgs come first on
          # PATH, and SONIX_VIRTIOFSD names that virtiofsd unless the caller
          # set it. A qemu-system-* that the qemu given here lacks (qemu_kvm
          # has only the host's architecture) is still looked up further
          # along the caller's PATH.
          postInstall = lib.optionalString stdenv.hostPlatform.isLinux ''
            wrapProgram $out/bin/sonix-run \
              --prefix PATH : ${lib.makeBinPath [ qemu virtiofsd ]} \
              --set-default SONIX_VIRTIOFSD ${lib.getExe virtiofsd}
          '';

          # macOS: Virtualization.framework refuses a process without the
          # com.apple.security.virtualization entitlement. Sign (ad hoc) after
          # stripping, which would drop the signature.
          postFixup = lib.optionalString stdenv.hostPlatform.isDarwin ''
            codesign --entitlements ${./vz/vz.entitlements} -f -s - $out/bin/sonix-run
          '';

          meta = {
            description = "Boot a built NixOS system from its bootspec without a disk image";
            homepage = "https://github.com/sonix-run/sonix-run";
            mainProgram = "sonix-run";
            platforms = lib.platforms.linux ++ lib.platforms.darwin;
          };
        };

      # Tests as derivations (nix/run-test.nix): lib.runTest builds sonix-run
      # with the caller's pkgs, and gives every system the guest module.
      runTests = import ./nix/run-test.nix {
        sonixRunFor = pkgs: pkgs.callPackage package { qemu = pkgs.qemu_kvm; };
        guestModule = self.nixosModules.default;
      };

      # The examples' Go tests (examples/harness, examples/multivm), built
      # from this source with the flake's vendorHash.
      exampleGoTest = packages: {
        src = ./.;
        inherit version vendorHash packages;
      };

      # What examples/multivm's systems need beyond the example: the busybox
      # binary alone (the test calls `busybox httpd`, `busybox nc`, ..., and
      # none of its applets may shadow the system's tools), and no firewall
      # between them (NixOS's would drop the web page and the nc messages).
      multivmNode =
        { pkgs, ... }:
        {
          environment.systemPackages = [
            (pkgs.runCommand "busybox-binary" { } ''
              mkdir -p $out/bin
              ln -s ${pkgs.busybox}/bin/busybox $out/bin/busybox
            '')
          ];
          networking.firewall.enable = false;
        };

      # A NixOS system using the guest module, as `nix flake check` builds it
      # (the example flake's configuration).
      exampleSystem =
        system: extra:
        nixpkgs.lib.nixosSystem {
          modules = [
            self.nixosModules.default
            ./examples/flake/configuration.nix
            { nixpkgs.hostPlatform = system; }
            extra
          ];
        };
    in
    {
      packages = forAllSystems (
        system: pkgs:
        {
          default = pkgs.callPackage package { qemu = pkgs.qemu_kvm; };
        }
        // lib.optionalAttrs (lib.elem system linuxSystems) {
          # The guest agent, for a guest of this system. The guest module
          # builds its own from the guest's pkgs (nix/agent.nix), so this
          # output is for the test system, other distributions and `nix build`.
          agent = pkgs.callPackage ./nix/agent.nix { inherit version; };
        }
      );

      apps = forAllSystems (
        system: pkgs: {
          default = {
            type = "app";
            program = lib.getExe self.packages.${system}.default;
            meta.description = "Boot a NixOS boot.json or toplevel: nix run . -- ./result";
          };
        }
      );

      # A module that imports the file, rather than the bare path: older
      # `nix flake check` (2.8) accepts only a function or an attribute set,
      # and the module system still knows the file for its messages.
      nixosModules.default = {
        imports = [ ./nix/guest-module.nix ];
      };

      # A sonix-run test as a derivation (nix/run-test.nix, docs/ci.md):
      #   lib.runTest { pkgs; name; systems; goTest; script; testFlags;
      #                 timeout; allowTCG; recordFailure; extraFiles; }
      # Building it runs the test in the build sandbox (requiredSystemFeatures
      # nixos-test and kvm); its passthru.interactive boots the systems for
      # `sonix-run shell NAME`. lib.buildGoTests { pkgs; src; vendorHash;
      # packages; ... } builds the Go test binaries alone.
      lib = {
        inherit (runTests) runTest buildGoTests;
      };

      templates.default = {
        path = ./examples/flake;
        description = "A NixOS configuration that boots under sonix-run (x86_64-linux and aarch64-linux)";
        welcomeText = ''
          Build the system and boot it:

          ```
          nix build .#nixosConfigurations.vm.config.system.build.toplevel
          nix run github:sonix-run/sonix-run -- ./result
          ```

          README.md has the rest: aarch64, macOS, and what is not there yet.
        '';
      };

      checks =
        forAllSystems (system: pkgs: { package = self.packages.${system}.default; })
        // lib.genAttrs linuxSystems (system: {
          package = self.packages.${system}.default;
          agent = self.packages.${system}.agent;
          # The guest module evaluates and its initrd builds, both store modes.
          guest = (exampleSystem system { }).config.system.build.toplevel;
          guest-writable-store =
            (exampleSystem system { sonix-run.writableStore.enable = true; }).config.system.build.toplevel;
          # A host's configuration (disks, swap, LUKS, systemd-boot) made
          # bootable by the module: what nix/tests checks against a
          # stand-in, here with real NixOS.
          guest-host-configuration =
            (exampleSystem system ./nix/tests/host-configuration.nix).config.system.build.toplevel;
          # The examples' Go tests as derivations, against the example's
          # NixOS system: `nix flake check` boots it on builders with KVM
          # (`nix run .#checks.SYSTEM.example-multivm.interactive` boots the
          # systems for a shell).
          example-harness = self.lib.runTest {
            pkgs = nixpkgs.legacyPackages.${system};
            name = "example-harness";
            systems.machine = exampleSystem system { };
            goTest = exampleGoTest [ "./examples/harness" ];
            script = builtins.readFile ./examples/harness/smoke.sh;
            timeout = 1200;
          };
          example-multivm = self.lib.runTest {
            pkgs = nixpkgs.legacyPackages.${system};
            name = "example-multivm";
            systems.server = exampleSystem system multivmNode;
            systems.client = exampleSystem system multivmNode;
            goTest = exampleGoTest [ "./examples/multivm" ];
            timeout = 1800;
          };
        });
    };
}
