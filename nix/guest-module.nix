# NixOS module: makes a NixOS configuration bootable by sonix-run.
#
# sonix-run boots the kernel and initrd named in the system's boot.json, with
# no disk: the host's /nix/store arrives over virtio-fs (tag "store"), a
# /lib/modules tree optionally as well (tag "modules"), and everything else
# lives on a tmpfs root. This module sets up the guest side of that:
#
#   - `/` on tmpfs;
#   - /nix/store from the virtio-fs tag `store`, read-only, mounted in the
#     initrd (or, with sonix-run.writableStore.enable, a tmpfs overlay on top);
#   - /lib/modules from the tag `modules` when sonix-run shares one
#     (`--modules DIR`), so an external kernel finds its modules;
#   - the virtio, virtio-fs and console drivers in the initrd (and the
#     pvpanic ones, as an option), and systemd as stage 1;
#   - kernel consoles for QEMU (ttyS0 on x86_64, ttyAMA0 on aarch64) and for
#     Virtualization.framework (hvc0), a getty on each one that exists, and
#     root logged in on them by default;
#   - no boot loader: sonix-run reads boot.json itself;
#   - sonix-run-agent.service (sonix-run.harness.enable), the guest side of
#     `sonix-run --run` (docs/harness.md, nix/harness-agent.sh).
#
# Import it from a flake (`sonix-run.nixosModules.default`) or by path; it is
# active once imported (`sonix-run.enable` turns it off again).
#
# The mount points it defines ("/", "/nix/store" and the store overlay's
# helpers) replace the configuration's own at priority 10, as NixOS's
# qemu-vm.nix does: change them through the options below. Other entries in
# `fileSystems` are kept; disks a host configuration names do not exist in the
# VM, so leave them out of the VM's configuration or give them `nofail`.
{ config, lib, pkgs, ... }:

let
  cfg = config.sonix-run;
  inherit (lib) mkOption mkIf mkDefault types;

  # The priority of NixOS's own mkVMOverride: above plain definitions and
  # mkForce, so that a host configuration's "/" gives way in the VM.
  vmOverride = lib.mkOverride 10;

  # virtio-fs shares carry no device node that systemd could wait for, so a
  # mount must come after the module loading (virtio_pci, virtiofs) that makes
  # the tag appear. Ordering only: a kernel with these drivers built in, whose
  # modules the initrd cannot load, still mounts.
  afterModules = "x-systemd.after=systemd-modules-load.service";

  # Where the read-only store from the host is mounted.
  roStore = if cfg.writableStore.enable then "/nix/.ro-store" else "/nix/store";

  initrdModules =
    [
      "virtio_pci" # virtio over PCI: QEMU q35 and virt
      "virtio_mmio" # virtio over MMIO: QEMU microvm and other MMIO machines
      "virtiofs" # the store and modules shares
      "virtio_console" # hvc0, the console under Virtualization.framework
    ]
    # (pvpanic's common code, where it is a module of its own, comes with
    # these as a dependency.)
    ++ lib.optionals cfg.pvpanic [
      "pvpanic_mmio" # QEMU's ISA pvpanic on x86_64 (ACPI QEMU0001)
      "pvpanic_pci" # QEMU's pvpanic-pci on aarch64
    ];

  # The guest side of the harness protocol (docs/harness.md). The script
  # documents itself; nix/harness-agent-test.sh tests it without a VM.
  # writeShellApplication adds `set -euo pipefail` (which the script has
  # anyway) and checks the script with shellcheck at build time.
  harnessAgent = pkgs.writeShellApplication {
    name = "sonix-run-agent";
    # base64, sleep; systemctl comes with the service's default PATH.
    runtimeInputs = [ pkgs.coreutils ];
    # (without its own #! line, which would land in the middle)
    text = lib.removePrefix "#!/usr/bin/env bash\n" (builtins.readFile ./harness-agent.sh);
  };
in
{
  options.sonix-run = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to make this system bootable by sonix-run: tmpfs root, the
        host's store over virtio-fs, virtio drivers and consoles, no boot
        loader. On by default, since importing the module is the way to ask
        for it; set it to `false` to import the module without effect.
      '';
    };

    rootSize = mkOption {
      type = types.str;
      default = "50%";
      example = "2G";
      description = ''
        The `size=` of the tmpfs mounted on `/`: an absolute size such as
        `2G`, or a percentage of the guest's memory (sonix-run's `--memory`).
        tmpfs takes memory only for what is written to it.
      '';
    };

    storeTag = mkOption {
      type = types.str;
      default = "store";
      description = ''
        The virtio-fs tag of the host's store share, mounted read-only on
        {file}`/nix/store` in the initrd. Must match sonix-run's
        `--store-tag` (default `store`).
      '';
    };

    modules = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to mount the virtio-fs share that `sonix-run --modules DIR`
          adds on {file}`/lib/modules`, so that a kernel other than the
          system's own finds its modules there (kmod looks in
          {file}`/lib/modules/$(uname -r)` after the booted system's modules).

          The mount is `nofail`: when no modules directory is shared, boot
          goes on and the mount unit is merely marked failed. Set this to
          `false` to avoid that unit if you never pass `--modules`.
        '';
      };

      tag = mkOption {
        type = types.str;
        default = "modules";
        description = ''
          The virtio-fs tag of the modules share. Must match sonix-run's
          `--modules-tag` (default `modules`).
        '';
      };
    };

    writableStore = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to make {file}`/nix/store` writable inside the guest: the
          host's store is mounted read-only on {file}`/nix/.ro-store` and an
          overlayfs with its upper layer on a tmpfs
          ({file}`/nix/.rw-store`) is mounted on {file}`/nix/store`, as
          NixOS's `virtualisation.writableStore` does. Whatever the guest
          adds to the store is lost at poweroff; the host's store is never
          written.

          The guest's Nix database starts empty; the closure of the system's
          packages (`system.path`, which holds nix itself) is registered at
          boot, so `nix build` in the guest reuses those paths. Other paths
          in the lower layer (the kernel, the toplevel) are readable but
          unknown to nix.
        '';
      };

      size = mkOption {
        type = types.str;
        default = "50%";
        example = "4G";
        description = ''
          The `size=` of the tmpfs that holds the store overlay's upper layer,
          as for {option}`sonix-run.rootSize`.
        '';
      };
    };

    consoles = mkOption {
      type = types.listOf types.str;
      default = [ "ttyS0" "ttyAMA0" "hvc0" ];
      description = ''
        Kernel consoles, added to the kernel command line as `console=NAME`
        in this order. The defaults cover QEMU's serial port on x86_64
        (`ttyS0`) and aarch64 (`ttyAMA0`) and the virtio console of
        Virtualization.framework (`hvc0`); a console whose device does not
        exist in a VM is ignored. sonix-run appends the console of the
        machine it starts after these, so that one is {file}`/dev/console`.
        systemd starts a serial getty on each console that exists.
      '';
    };

    autologin = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether root is logged in without a password on the consoles (every
        getty, serial ones included), and may use the initrd's emergency
        shell, as fits a throwaway development VM. Turn it off for a VM
        whose console others can reach.
      '';
    };

    pvpanic = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = ''
        Whether to put the pvpanic drivers (`pvpanic_mmio`, `pvpanic_pci`)
        in the initrd and load them there, so that a kernel panic in stage 1
        too reaches QEMU, and sonix-run exits with its panic status (122)
        instead of the reboot one (121).

        Off by default because NixOS builds an initrd only from modules that
        exist: with a kernel built without `CONFIG_PVPANIC_MMIO` and
        `CONFIG_PVPANIC_PCI` the initrd would fail to build, and whether
        NixOS's default kernel has them was not checked. Check yours with
        `zcat /proc/config.gz | grep PVPANIC` in the guest. Panics after the
        initrd are reported either way when the kernel has the drivers,
        since udev loads them for QEMU's pvpanic device.
      '';
    };

    harness.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to run the guest side of sonix-run's host-guest protocol
        (`sonix-run --run CMD`, `sonix-run TARGET -- CMD` and the Go
        harness; sonix-run's {file}`docs/harness.md`): the service
        `sonix-run-agent.service`, which finds the virtio console ports
        `org.sonix-run.ctl`, `.stdout`, `.stderr` and `.stdin`, runs each
        command the host sends as root with {command}`sh -c` in {file}`/`,
        streams its output to the host and reports its exit status, and
        powers the guest off when asked.

        Without those ports (a plain `sonix-run ./result`) the service looks
        for them for ten seconds and then exits successfully, so leaving
        this on costs nothing. The command's {env}`PATH` is
        {file}`/run/wrappers/bin`, {file}`/run/current-system/sw/bin`, then
        the service's own; {env}`HOME` is {file}`/root`.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = config.boot.initrd.systemd.enable;
        message = "sonix-run's guest module mounts the store with systemd in stage 1; do not set boot.initrd.systemd.enable = false.";
      }
    ];

    # sonix-run reads boot.json and loads kernel and initrd itself.
    boot.loader.grub.enable = mkDefault false;
    boot.loader.systemd-boot.enable = mkDefault false;

    boot.initrd.systemd.enable = true;
    boot.initrd.availableKernelModules = initrdModules ++ lib.optional cfg.writableStore.enable "overlay";
    # Loaded early by systemd-modules-load in the initrd, so that the
    # virtio-fs tags exist before the store is mounted and hvc0 exists before
    # systemd looks for consoles.
    boot.initrd.kernelModules = initrdModules;

    boot.kernelParams = map (c: "console=${c}") cfg.consoles;

    # The VM has no disks of its own.
    swapDevices = vmOverride [ ];
    boot.initrd.luks.devices = vmOverride { };

    fileSystems = {
      "/" = vmOverride {
        device = "none";
        fsType = "tmpfs";
        options = [ "mode=0755" "size=${cfg.rootSize}" ];
      };

      ${roStore} = vmOverride {
        device = cfg.storeTag;
        fsType = "virtiofs";
        options = [ "ro" afterModules ];
        neededForBoot = true;
        noCheck = true;
      };

      # Mounted in the initrd, so that the modules are there before udev
      # starts loading drivers in stage 2.
      "/lib/modules" = mkIf cfg.modules.enable {
        device = cfg.modules.tag;
        fsType = "virtiofs";
        options = [ "ro" "nofail" afterModules ];
        neededForBoot = true;
        noCheck = true;
      };
    }
    // lib.optionalAttrs cfg.writableStore.enable {
      "/nix/.rw-store" = vmOverride {
        device = "none";
        fsType = "tmpfs";
        options = [ "mode=0755" "size=${cfg.writableStore.size}" ];
        neededForBoot = true;
      };

      # NixOS's overlay support prefixes /sysroot in the initrd and creates
      # the upper and work directories.
      "/nix/store" = vmOverride {
        overlay = {
          lowerdir = [ "/nix/.ro-store" ];
          upperdir = "/nix/.rw-store/store";
          workdir = "/nix/.rw-store/work";
        };
        depends = [ "/nix/.ro-store" "/nix/.rw-store" ];
        neededForBoot = true;
      };
    };

    # Without default dependencies systemd does not try to unmount the
    # read-only store while the rest of the system still runs from it at
    # poweroff, which can otherwise hang the shutdown under virtio-fs.
    systemd.mounts = lib.optional (!cfg.writableStore.enable) {
      what = cfg.storeTag;
      where = "/nix/store";
      overrideStrategy = "asDropin";
      unitConfig.DefaultDependencies = false;
    };

    systemd.services.sonix-run-register-store = mkIf (cfg.writableStore.enable && config.nix.enable) {
      description = "Register the system's store paths in the guest's Nix database";
      wantedBy = [ "multi-user.target" ];
      before = [ "nix-daemon.service" ];
      serviceConfig.Type = "oneshot";
      script = ''
        ${config.nix.package.out}/bin/nix-store --load-db \
          < ${pkgs.closureInfo { rootPaths = [ config.system.path ]; }}/registration
      '';
    };

    # The harness agent. The ports are virtio console ports: virtio_console
    # is in the initrd already (for hvc0); listed here as well so that a
    # kernel with the module but an initrd without it still has the ports.
    boot.kernelModules = mkIf cfg.harness.enable [ "virtio_console" ];

    # The service starts at boot and waits a while for the ports; a control
    # port that appears later (the kernel announces the port's name with a
    # change event) starts it again. Without udev the boot-time start is
    # enough, since the ports come with the virtio console device.
    services.udev.extraRules = mkIf cfg.harness.enable ''
      SUBSYSTEM=="virtio-ports", ATTR{name}=="org.sonix-run.ctl", TAG+="systemd", ENV{SYSTEMD_WANTS}+="sonix-run-agent.service"
    '';

    systemd.services.sonix-run-agent = mkIf cfg.harness.enable {
      description = "sonix-run harness agent (runs the host's commands)";
      wantedBy = [ "multi-user.target" ];
      # Early: it needs the store and /run, not the network.
      after = [ "local-fs.target" ];
      # The command being run may be `nixos-rebuild switch`: restarting the
      # agent would kill it (and the host would never get its status).
      restartIfChanged = false;
      environment.HOME = "/root";
      serviceConfig = {
        Type = "simple";
        ExecStart = "${harnessAgent}/bin/sonix-run-agent";
        # User= makes systemd set USER, LOGNAME, HOME and SHELL.
        User = "root";
        # The agent exits 0 when there are no ports; errors are worth a
        # second try.
        Restart = "on-failure";
        RestartSec = "1s";
        # systemd ignores SIGPIPE in services by default, and the commands
        # would inherit that (`yes | head` would complain of a broken pipe
        # instead of ending quietly).
        IgnoreSIGPIPE = false;
      };
    };

    services.getty.autologinUser = mkIf cfg.autologin (mkDefault "root");
    boot.initrd.systemd.emergencyAccess = mkIf cfg.autologin (mkDefault true);
  };
}
