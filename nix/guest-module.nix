# NixOS module: makes a NixOS configuration bootable by sonix-run.
#
# sonix-run boots the kernel and initrd named in the system's boot.json, with
# no disk image: the host's /nix/store arrives over virtio-fs (tag "store"), a
# /lib/modules tree optionally as well (tag "modules"), and everything else
# lives on a tmpfs root. This module sets up the guest side of that:
#
#   - `/` on tmpfs; /nix/store from the virtio-fs tag `store`, read-only,
#     mounted in the initrd (or, with sonix-run.writableStore.enable, a tmpfs
#     overlay on top); /lib/modules from the tag `modules` when sonix-run
#     shares one (`--modules DIR`);
#   - a host's own configuration boots as it is: its disks, swap, resume
#     device, LUKS devices and boot loaders are left out of the VM (see
#     "What a host configuration keeps" below);
#   - the virtio, virtio-fs and console drivers in the initrd (and the
#     pvpanic ones, as an option), and systemd as stage 1;
#   - kernel consoles for QEMU (ttyS0 on x86_64, ttyAMA0 on aarch64) and for
#     Virtualization.framework (hvc0), a getty on each one that exists, and
#     root logged in on them by default;
#   - sonix-run-agent.service: the guest agent (cmd/sonix-run-agent, built
#     for the guest by nix/agent.nix) that serves `sonix-run --run`, `exec`,
#     `cp`, `shell` and the Go harness over the virtio console port
#     org.sonix-run.agent;
#   - the system's store paths registered in the guest's Nix database at
#     boot, before the agent and nix-daemon start, so that Nix inside works;
#   - persistent state: with `sonix-run --state FILE` the disk is formatted on
#     first use and mounted on /var and /home (sonix-run.state);
#   - optionally, static addresses from the kernel command line for
#     `sonix-run --vlan` (sonix-run.staticAddress).
#
# Import it from a flake (`sonix-run.nixosModules.default`) or by path, into
# a configuration meant for the VM (a copy of a host's configuration is
# fine); it is active once imported (`sonix-run.enable` turns it off again).
# Never into the configuration a machine boots from disk: in it the module
# drops that machine's own disks and boot loader.
#
# What a host configuration keeps. The mount points this module defines ("/",
# the store and its overlay's helpers, /lib/modules) replace the
# configuration's own at priority 10, as NixOS's qemu-vm.nix does. Of the
# configuration's other `fileSystems` entries the VM keeps those of a virtual
# file system (tmpfs, proc, sysfs, ...), those of type virtiofs (a share the
# user passes with `sonix-run --share DIR:TAG`), and those named in
# sonix-run.keepFileSystems; every other entry is disabled (its
# `fileSystems.<name>.enable` set to false at priority 10), so that no device
# the VM lacks is waited for. Disabling rather than `nofail`: a missing disk
# would still cost a device timeout per entry, a `nofail` /nix or /var would
# be mounted over the VM's own, and a host's /dev/vda1 could name a disk
# sonix-run attached for something else. Swap devices, the resume device and
# LUKS devices are dropped the same way; every boot loader NixOS declares is
# turned off (sonix-run reads boot.json itself).
{
  config,
  lib,
  pkgs,
  options,
  utils,
  ...
}:

let
  cfg = config.sonix-run;
  inherit (lib)
    mkOption
    mkIf
    mkDefault
    types
    ;

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

  # The mount points this module defines itself.
  ownMountPoints = [
    "/"
    roStore
    "/lib/modules"
  ]
  ++ lib.optionals cfg.writableStore.enable [
    "/nix/.rw-store"
    "/nix/store"
  ];

  # File systems that need no device, kept from a host's configuration.
  # virtiofs: the only way to a host directory in a sonix-run VM.
  keptFsTypes = [
    "tmpfs"
    "ramfs"
    "proc"
    "sysfs"
    "devtmpfs"
    "devpts"
    "cgroup"
    "cgroup2"
    "securityfs"
    "debugfs"
    "tracefs"
    "configfs"
    "bpf"
    "pstore"
    "hugetlbfs"
    "mqueue"
    "fusectl"
    "binfmt_misc"
    "virtiofs"
  ];

  keptInVM =
    fs: lib.elem fs.mountPoint (ownMountPoints ++ cfg.keepFileSystems) || lib.elem fs.fsType keptFsTypes;

  # Every boot loader of NixOS 26.05 with an `enable` option. Only those the
  # evaluating NixOS declares are set, so that an older or newer NixOS
  # without one of them still evaluates.
  bootLoaders = [
    "grub"
    "systemd-boot"
    "generic-extlinux-compatible"
    "limine"
    "refind"
    "external"
    "generationsDir"
    "initScript"
  ];
  declaredBootLoaders = lib.filter (
    name: options.boot.loader ? ${name} && options.boot.loader.${name} ? enable
  ) bootLoaders;

  initrdModules = [
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

  registration = cfg.storeRegistration.enable;

  # The registration of the system's packages, made when the system is
  # built: what Nix in the guest knows when the host passes none. (The
  # closure of the toplevel cannot be registered from inside the toplevel,
  # which is why the host passes that.)
  packagesRegistration = pkgs.closureInfo { rootPaths = [ config.system.path ]; };

  # The state disk: sonix-run attaches --state FILE as a virtio disk with this
  # serial, and says so on the kernel command line.
  stateDevice = "/dev/disk/by-id/virtio-sonix-state";
  stateDeviceUnit = "${utils.escapeSystemdPath stateDevice}.device";
  stateRoot = "/sysroot${cfg.state.mountPoint}";
  # Parents before children, so that /var/lib/x is bound after /var.
  stateDirectories = lib.sort (a: b: a < b) (lib.unique cfg.state.directories);

  inherit (lib) escapeShellArg;
in
{
  imports = [
    (lib.mkRenamedOptionModule
      [ "sonix-run" "harness" "enable" ]
      [ "sonix-run" "agent" "enable" ]
    )
  ];

  options.sonix-run = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to make this system bootable by sonix-run: tmpfs root, the
        host's store over virtio-fs, virtio drivers and consoles, no boot
        loader, no disks but sonix-run's. On by default, since importing the
        module is the way to ask for it; set it to `false` to import the
        module without effect.
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

    keepFileSystems = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/data" ];
      description = ''
        Mount points of this configuration's own {option}`fileSystems`
        entries to keep in the VM although they are not virtual file
        systems, e.g. a network file system the VM can reach. Every other
        entry that is not a virtual file system (tmpfs, proc, sysfs, ...) or
        a virtiofs share is left out of the VM, so that the VM does not wait
        for a host's disks.
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
          written. The agent starts after the store registration
          ({option}`sonix-run.storeRegistration.enable`), so a command run
          with `sonix-run --run` finds Nix ready.
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

    storeRegistration = {
      enable = mkOption {
        type = types.bool;
        default = config.nix.enable;
        defaultText = lib.literalExpression "config.nix.enable";
        description = ''
          Whether to register the system's store paths in the guest's Nix
          database at boot (`sonix-run-register-store.service`, before
          `nix-daemon` and the agent), so that `nix-store -q`, `nix build`
          and `nixos-rebuild` in the guest see them as valid paths.

          The guest's database starts empty on every boot. sonix-run, when
          the host has `nix-store`, shares the registration of the whole
          closure of the booted system (`nix-store --dump-db` of it) as the
          file {file}`registration` of the virtio-fs share tagged
          {option}`sonix-run.storeRegistration.tag`; the service loads it
          with `nix-store --load-db`. Without that share it loads the
          registration of the system's packages (`system.path`, which holds
          Nix itself) made at build time, and says in the journal that the
          rest of the closure (the system itself, its kernel, initrd and
          units) stays unknown to Nix.
        '';
      };

      tag = mkOption {
        type = types.str;
        default = "sonix-run-meta";
        description = ''
          The virtio-fs tag of the per-run share in which sonix-run passes
          the closure's registration (the file {file}`registration`).
        '';
      };
    };

    state = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to use the state disk that `sonix-run --state FILE`
          attaches (a virtio disk with the serial `sonix-state`, which
          sonix-run announces with `sonix.state` on the kernel command line):
          in the initrd the disk is formatted (ext4, label `sonix-state`) if
          it holds no file system, partition table or other signature at
          all, never otherwise; mounted on
          {option}`sonix-run.state.mountPoint`; and a directory of it is
          bound on each of {option}`sonix-run.state.directories`, so that
          what is written there survives the VM while `/` stays a tmpfs.

          Without `--state` nothing happens and costs nothing (the unit's
          condition on `sonix.state` is false); turning this off only
          leaves mkfs.ext4 and blkid out of the initrd.
        '';
      };

      directories = mkOption {
        type = types.listOf types.str;
        default = [
          "/var"
          "/home"
        ];
        example = [
          "/var/lib"
          "/home"
          "/root"
        ];
        description = ''
          Directories kept on the state disk. Each is bound in the initrd
          from the directory of the same path on the disk (`/var` from
          {file}`/sonix-state/var`), before the system is activated, so that
          {file}`/var/lib/nixos` (the user and group ids) persists with the
          rest. Must be absolute paths outside {file}`/nix`.
        '';
      };

      mountPoint = mkOption {
        type = types.str;
        default = "/sonix-state";
        description = ''
          Where the state disk itself is mounted.
        '';
      };
    };

    staticAddress.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to give network interfaces the addresses that sonix-run puts
        on the kernel command line for `--vlan` (so that VMs on a virtual
        LAN need no DHCP): each `sonix.ip=ADDRESS/PREFIX,MAC` becomes a
        systemd-networkd configuration for the interface with that MAC
        address (`sonix.ip=ADDRESS/PREFIX` without a MAC: for every Ethernet
        interface, meant for a VM whose only NIC is on the LAN). IPv4 and
        IPv6 addresses are accepted; no gateway is set.

        Needs systemd-networkd ({option}`systemd.network.enable`, which this
        turns on with default priority). It configures only the interfaces
        named this way and leaves the others to whatever configures them
        now; an interface that NetworkManager manages as well gets
        conflicting configuration.
      '';
    };

    consoles = mkOption {
      type = types.listOf types.str;
      default = [
        "ttyS0"
        "ttyAMA0"
        "hvc0"
      ];
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

    agent = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to run sonix-run's guest agent
          (`sonix-run-agent.service`), which serves `sonix-run --run`,
          `sonix-run exec`, `cp` and `shell` and the Go harness over the
          virtio console port `org.sonix-run.agent` (sonix-run's
          {file}`docs/protocol.md`). It runs as root, starts early (after the
          local file systems and the store registration, not waiting for
          the network or multi-user.target, and also in rescue and
          emergency mode), is restarted whenever it exits, and is not
          restarted by `nixos-rebuild switch` in the guest, which may be the
          very command it runs. The commands' {env}`PATH` is
          {file}`/run/wrappers/bin:/run/current-system/sw/bin`;
          {env}`HOME` is {file}`/root`.
        '';
      };

      package = mkOption {
        type = types.package;
        default = pkgs.callPackage ./agent.nix { };
        defaultText = lib.literalExpression "pkgs.callPackage \"\${sonix-run}/nix/agent.nix\" { }";
        description = ''
          The agent: a static Go program, built by default from this
          module's own source tree with the guest's `pkgs` (so for the
          guest's architecture). It must provide
          {file}`bin/sonix-run-agent`.
        '';
      };
    };
  };

  # Of the configuration's own file systems, only those the VM can have.
  # (A declaration of its own, merged into NixOS's fileSystems submodule, as
  # NixOS's overlayfs module does, so that each entry decides for itself.)
  options.fileSystems = mkOption {
    type = types.attrsOf (
      types.submodule (
        { config, ... }:
        {
          config.enable = mkIf (cfg.enable && !keptInVM config) (vmOverride false);
        }
      )
    );
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = config.boot.initrd.systemd.enable;
        message = "sonix-run's guest module mounts the store with systemd in stage 1; do not set boot.initrd.systemd.enable = false.";
      }
      {
        assertion = registration -> config.nix.enable;
        message = "sonix-run.storeRegistration.enable needs Nix in the guest (nix.enable = true).";
      }
      {
        assertion = cfg.staticAddress.enable -> config.systemd.network.enable;
        message = "sonix-run.staticAddress.enable writes systemd-networkd configuration; do not set systemd.network.enable = false.";
      }
    ]
    ++ lib.optionals cfg.state.enable (
      [
        {
          assertion =
            lib.hasPrefix "/" cfg.state.mountPoint
            && cfg.state.mountPoint != "/"
            && !lib.hasSuffix "/" cfg.state.mountPoint
            && cfg.state.mountPoint != "/nix"
            && !lib.hasPrefix "/nix/" cfg.state.mountPoint;
          message = "sonix-run.state.mountPoint must be an absolute path outside /nix without a trailing slash, not \"${cfg.state.mountPoint}\".";
        }
      ]
      ++ map (dir: {
        assertion =
          lib.hasPrefix "/" dir
          && dir != "/"
          && !lib.hasSuffix "/" dir
          && dir != "/nix"
          && !lib.hasPrefix "/nix/" dir
          && dir != cfg.state.mountPoint
          && !lib.hasPrefix "${cfg.state.mountPoint}/" dir
          && !lib.hasPrefix "${dir}/" cfg.state.mountPoint;
        message = "sonix-run.state.directories: \"${dir}\" must be an absolute path without a trailing slash, outside /nix and not containing or inside sonix-run.state.mountPoint (${cfg.state.mountPoint}).";
      }) cfg.state.directories
      ++ map (dir: {
        assertion = !(lib.any (fs: fs.mountPoint == dir) (lib.attrValues config.fileSystems));
        message = "sonix-run.state.directories: \"${dir}\" is also a mount point in fileSystems, which would hide the state disk's copy; drop one of them.";
      }) cfg.state.directories
    );

    # sonix-run reads boot.json and loads kernel and initrd itself; no boot
    # loader is installed, also not by `nixos-rebuild switch` in the guest.
    boot.loader = lib.genAttrs declaredBootLoaders (_: {
      enable = vmOverride false;
    });

    # Default priority, so that a configuration saying false gets the
    # assertion above rather than a conflict between definitions.
    boot.initrd.systemd.enable = mkDefault true;
    boot.initrd.availableKernelModules =
      initrdModules
      ++ lib.optional cfg.writableStore.enable "overlay"
      ++ lib.optional cfg.state.enable "virtio_blk";
    # Loaded early by systemd-modules-load in the initrd, so that the
    # virtio-fs tags exist before the store is mounted and hvc0 exists before
    # systemd looks for consoles.
    boot.initrd.kernelModules = initrdModules;

    boot.kernelParams = map (c: "console=${c}") cfg.consoles;

    # The VM has no disks but the ones sonix-run attaches.
    swapDevices = vmOverride [ ];
    boot.resumeDevice = vmOverride "";
    boot.initrd.luks.devices = vmOverride { };

    fileSystems = {
      "/" = vmOverride {
        device = "none";
        fsType = "tmpfs";
        options = [
          "mode=0755"
          "size=${cfg.rootSize}"
        ];
      };

      ${roStore} = vmOverride {
        device = cfg.storeTag;
        fsType = "virtiofs";
        options = [
          "ro"
          afterModules
        ];
        neededForBoot = true;
        noCheck = true;
      };

      # Mounted in the initrd, so that the modules are there before udev
      # starts loading drivers in stage 2.
      "/lib/modules" = mkIf cfg.modules.enable (vmOverride {
        device = cfg.modules.tag;
        fsType = "virtiofs";
        options = [
          "ro"
          "nofail"
          afterModules
        ];
        neededForBoot = true;
        noCheck = true;
      });
    }
    // lib.optionalAttrs cfg.writableStore.enable {
      "/nix/.rw-store" = vmOverride {
        device = "none";
        fsType = "tmpfs";
        options = [
          "mode=0755"
          "size=${cfg.writableStore.size}"
        ];
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
        depends = [
          "/nix/.ro-store"
          "/nix/.rw-store"
        ];
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

    # The guest's Nix database is on the tmpfs root: fill it before anything
    # can ask Nix about the store. Early and without default dependencies,
    # like the agent that waits for it.
    systemd.services.sonix-run-register-store = mkIf registration {
      description = "Register the system's store paths in the guest's Nix database";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" ];
      before = [
        "nix-daemon.socket"
        "nix-daemon.service"
        "sonix-run-agent.service"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      unitConfig.DefaultDependencies = false;
      path = [
        pkgs.util-linux
        config.nix.package.out
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      # The share is mounted only to read the file: without it (a host
      # without Nix, or a sonix-run that does not pass it) the mount fails at
      # once, with no device to wait for and no failed unit left behind.
      script = ''
        meta=/run/sonix-run/meta
        mkdir -p "$meta"
        from_host=
        if err=$(mount -t virtiofs -o ro,nosuid,nodev,noexec ${escapeShellArg cfg.storeRegistration.tag} "$meta" 2>&1); then
          if [ -f "$meta/registration" ]; then
            nix-store --load-db < "$meta/registration"
            from_host=1
            echo "sonix-run: registered the closure of the booted system from the host's registration"
          else
            err="the share has no file named registration"
          fi
          umount "$meta"
        fi
        if [ -z "$from_host" ]; then
          nix-store --load-db < ${packagesRegistration}/registration
          echo "sonix-run: the host passed no store registration (virtio-fs tag ${cfg.storeRegistration.tag}, file registration: $err)."
          echo "sonix-run: Nix in this VM knows only the system's packages (system.path); the system itself, its kernel, initrd and units are invalid paths to nix-store, nix build and nixos-rebuild. sonix-run passes the registration when the host has nix-store."
        fi
      '';
    };

    # The guest agent. Its port is a virtio console port: virtio_console is
    # in the initrd already (for hvc0); listed here as well so that a kernel
    # with the module but an initrd without it still has the port.
    boot.kernelModules = mkIf cfg.agent.enable [ "virtio_console" ];

    systemd.services.sonix-run-agent = mkIf cfg.agent.enable {
      description = "sonix-run guest agent (runs the host's commands)";
      # Also in rescue and emergency mode, where it is most needed to look
      # inside, and kept there (IgnoreOnIsolate).
      wantedBy = [
        "multi-user.target"
        "rescue.target"
        "emergency.target"
      ];
      # Early: it needs the store, /dev, /sys, /dev/pts and /etc/passwd (all
      # there when stage 2 starts), the local file systems and the tmpfiles
      # that make /tmp and /run usable; not the network.
      after = [
        "local-fs.target"
        "systemd-tmpfiles-setup.service"
      ]
      ++ lib.optional registration "sonix-run-register-store.service";
      wants = lib.optional registration "sonix-run-register-store.service";
      before = [ "shutdown.target" ];
      conflicts = [ "shutdown.target" ];
      unitConfig = {
        DefaultDependencies = false;
        IgnoreOnIsolate = true;
      };
      # Restarted however often it exits: no rate limit that would leave the
      # host without an agent.
      startLimitIntervalSec = 0;
      # The command being run may be `nixos-rebuild switch`: restarting the
      # agent would kill it (and the host would never get its status).
      restartIfChanged = false;
      environment = {
        HOME = "/root";
        # The commands' PATH, as in a login shell (NixOS otherwise gives
        # services a minimal one).
        PATH = lib.mkForce "/run/wrappers/bin:/run/current-system/sw/bin";
      };
      serviceConfig = {
        Type = "exec";
        ExecStart = "${cfg.agent.package}/bin/sonix-run-agent";
        # User= makes systemd set USER, LOGNAME, HOME and SHELL.
        User = "root";
        # The agent reopens its port itself when the host hangs up; it exits
        # only on errors, which deserve a fresh start.
        Restart = "always";
        RestartSec = "1s";
        # systemd ignores SIGPIPE in services by default, and the commands
        # would inherit that (`yes | head` would complain of a broken pipe
        # instead of ending quietly).
        IgnoreSIGPIPE = false;
      };
    };

    # Persistent state (sonix-run --state FILE). In the initrd, because /var
    # must be in place before the system is activated there; a service
    # rather than fileSystems entries, so that it can be conditional on
    # sonix-run's kernel parameter: fstab mounts would wait for a disk that a
    # run without --state does not have.
    boot.initrd.systemd.services.sonix-run-state = mkIf cfg.state.enable {
      description = "Format (on first use) and mount sonix-run's state disk";
      wantedBy = [ "initrd-fs.target" ];
      before = [ "initrd-fs.target" ];
      requires = [ stateDeviceUnit ];
      after = [
        stateDeviceUnit
        "sysroot.mount"
      ];
      unitConfig = {
        DefaultDependencies = false;
        ConditionKernelCommandLine = "sonix.state";
        RequiresMountsFor = "/sysroot";
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        export PATH=/bin:/sbin
        dev=${stateDevice}
        if [ ! -b "$dev" ]; then
          echo "sonix-run: $dev is not a block device; the state disk is not used" >&2
          exit 1
        fi
        # blkid -p: status 0 when the disk holds any signature (a file
        # system, a partition table, ...), 2 when it holds none.
        status=0
        blkid -p "$dev" >/dev/null || status=$?
        case $status in
          0) ;;
          2)
            echo "sonix-run: the state disk is empty; making an ext4 file system on it"
            mkfs.ext4 -q -L sonix-state "$dev"
            ;;
          *)
            echo "sonix-run: blkid could not probe the state disk $dev (status $status); not formatting it" >&2
            exit 1
            ;;
        esac
        mkdir -p ${escapeShellArg stateRoot}
        mount "$dev" ${escapeShellArg stateRoot}
      ''
      + lib.concatMapStrings (dir: ''
        mkdir -p ${escapeShellArg "${stateRoot}/${lib.removePrefix "/" dir}"} ${escapeShellArg "/sysroot${dir}"}
        mount --bind ${escapeShellArg "${stateRoot}/${lib.removePrefix "/" dir}"} ${escapeShellArg "/sysroot${dir}"}
      '') stateDirectories;
    };
    boot.initrd.systemd.initrdBin = mkIf cfg.state.enable [ pkgs.e2fsprogs ];
    boot.initrd.systemd.extraBin = mkIf cfg.state.enable {
      # Default priority: any other module's blkid will do as well.
      blkid = mkDefault "${pkgs.util-linux}/bin/blkid";
    };
    boot.initrd.supportedFilesystems = mkIf cfg.state.enable [ "ext4" ];

    # Static addresses for --vlan: networkd configuration written from the
    # kernel command line before networkd starts.
    systemd.network.enable = mkIf cfg.staticAddress.enable (mkDefault true);
    systemd.services.sonix-run-static-address = mkIf cfg.staticAddress.enable {
      description = "Network addresses from sonix-run's kernel command line (sonix.ip=)";
      wantedBy = [ "systemd-networkd.service" ];
      before = [
        "systemd-networkd.service"
        "network-pre.target"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      unitConfig = {
        DefaultDependencies = false;
        ConditionKernelCommandLine = "sonix.ip";
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        dir=/run/systemd/network
        mkdir -p "$dir"
        ipv4='^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$'
        ipv6='^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$'
        mac='^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$'
        read -r -a words < /proc/cmdline
        n=0 bad=0
        for word in "''${words[@]}"; do
          case $word in
            sonix.ip=*) value=''${word#sonix.ip=} ;;
            *) continue ;;
          esac
          address=''${value%%,*}
          match="Type=ether"
          if [ "$address" != "$value" ]; then
            hw=''${value#*,}
            if ! [[ $hw =~ $mac ]]; then
              echo "sonix-run: ignoring $word: expected sonix.ip=ADDRESS/PREFIX or sonix.ip=ADDRESS/PREFIX,MAC, and $hw is not a MAC address" >&2
              bad=1
              continue
            fi
            match="MACAddress=$hw"
          fi
          if ! [[ $address =~ $ipv4 || $address =~ $ipv6 ]]; then
            echo "sonix-run: ignoring $word: $address is not ADDRESS/PREFIX (IPv4 or IPv6)" >&2
            bad=1
            continue
          fi
          n=$((n + 1))
          # 10-: before NixOS's own networkd files (which start at 40-), so
          # that this one configures the interface.
          printf '%s\n' "[Match]" "$match" "" "[Network]" "Address=$address" \
            "LinkLocalAddressing=no" "IPv6AcceptRA=no" >"$dir/10-sonix-run-ip-$n.network"
          echo "sonix-run: $address on the interface with $match"
        done
        exit "$bad"
      '';
    };

    services.getty.autologinUser = mkIf cfg.autologin (mkDefault "root");
    boot.initrd.systemd.emergencyAccess = mkIf cfg.autologin (mkDefault true);
  };
}
