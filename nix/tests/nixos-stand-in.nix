# A stand-in for the part of NixOS that nix/guest-module.nix touches: the
# declarations (names, types, defaults, merge behaviour) of exactly the
# options the module reads or sets, and the few derived values the tests
# look at (the fstab, the systemd units, the failed assertions). Written for
# these tests from reading NixOS's own modules (nixos-26.05 era):
#
#   fileSystems, boot.specialFileSystems   nixos/modules/tasks/filesystems.nix
#   fileSystems.<n>.neededForBoot          nixos/modules/system/boot/stage-1.nix
#   fileSystems.<n>.overlay                nixos/modules/tasks/filesystems/overlayfs.nix
#   swapDevices                            nixos/modules/config/swap.nix
#   systemd.services, systemd.mounts,
#   boot.initrd.systemd.services           nixos/lib/systemd-unit-options.nix,
#                                          nixos/lib/systemd-lib.nix
#   boot.initrd.systemd.*                  nixos/modules/system/boot/systemd/initrd.nix
#   utils.fsNeededForBoot,
#   utils.escapeSystemdPath                nixos/lib/utils.nix
#   assertions, warnings                   nixos/modules/misc/assertions.nix
#
# It is not NixOS: nothing here builds, and an option NixOS has but this
# file lacks makes a test fail with "option does not exist" (which is the
# point: the module may set only options that exist). Where NixOS derives
# values (fstab lines, unit sections) this file derives the same ones in its
# own, simpler way.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;

  # --- nixos/lib/utils.nix ---------------------------------------------------
  pathsNeededForBoot = [
    "/"
    "/nix"
    "/nix/store"
    "/var"
    "/var/log"
    "/var/lib"
    "/var/lib/nixos"
    "/etc"
    "/usr"
  ];
  fsNeededForBoot = fs: fs.neededForBoot || lib.elem fs.mountPoint pathsNeededForBoot;

  # systemd-escape --path: "/" separates, other unsafe bytes become \xNN, a
  # leading "." too; leading and trailing slashes go.
  escapeSystemdPath =
    path:
    let
      trimmed = lib.removeSuffix "/" (lib.removePrefix "/" path);
      safe = lib.stringToCharacters "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.";
      hex = c: "\\x${lib.toLower (lib.toHexString (lib.strings.charToInt c))}";
      escapeChar = i: c: if c == "/" then "-" else if lib.elem c safe && !(i == 0 && c == ".") then c else hex c;
    in
    if path == "/" then "-" else lib.concatStrings (lib.imap0 escapeChar (lib.stringToCharacters trimmed));

  utils = { inherit pathsNeededForBoot fsNeededForBoot escapeSystemdPath; };

  # --- nixos/lib/systemd-unit-options.nix, systemd-lib.nix ---------------------
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # Repeatable settings are lists and concatenate; others must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.isList (lib.head defs').value then
        lib.concatMap (
          def:
          if lib.isList def.value then
            def.value
          else
            throw "systemd unit option ${lib.showOption loc}: a mix of list and non-list definitions"
        ) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  checkServiceConfig =
    attrs:
    let
      value = name: allowed: !(attrs ? ${name}) || lib.elem (attrs.${name}.content or attrs.${name}) allowed;
    in
    value "Type" [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "notify-reload"
      "idle"
    ]
    && value "Restart" [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "on-watchdog"
      "always"
    ];

  unitNames =
    description:
    mkOption {
      default = [ ];
      type = types.listOf unitNameType;
      inherit description;
    };

  # Options every unit has, and the [Unit] section NixOS derives from them.
  commonUnit =
    { config, options, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        description = mkOption {
          type = types.singleLineStr;
          default = "";
        };
        documentation = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        requires = unitNames "Requires=";
        wants = unitNames "Wants=";
        upholds = unitNames "Upholds=";
        after = unitNames "After=";
        before = unitNames "Before=";
        bindsTo = unitNames "BindsTo=";
        partOf = unitNames "PartOf=";
        conflicts = unitNames "Conflicts=";
        requisite = unitNames "Requisite=";
        onFailure = unitNames "OnFailure=";
        onSuccess = unitNames "OnSuccess=";
        wantedBy = unitNames "inverse Wants=";
        requiredBy = unitNames "inverse Requires=";
        upheldBy = unitNames "inverse Upholds=";
        aliases = unitNames "aliases";
        startLimitBurst = mkOption { type = types.int; };
        startLimitIntervalSec = mkOption { type = types.int; };
        unitConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
        overrideStrategy = mkOption {
          type = types.enum [
            "asDropinIfExists"
            "asDropin"
          ];
          default = "asDropinIfExists";
        };
      };
      config.unitConfig =
        let
          list = key: value: lib.optionalAttrs (value != [ ]) { ${key} = toString value; };
        in
        list "Requires" config.requires
        // list "Wants" config.wants
        // list "Upholds" config.upholds
        // list "After" config.after
        // list "Before" config.before
        // list "BindsTo" config.bindsTo
        // list "PartOf" config.partOf
        // list "Conflicts" config.conflicts
        // list "Requisite" config.requisite
        // list "OnFailure" config.onFailure
        // list "OnSuccess" config.onSuccess
        // lib.optionalAttrs (config.description != "") { Description = config.description; }
        // lib.optionalAttrs options.startLimitIntervalSec.isDefined {
          StartLimitIntervalSec = toString config.startLimitIntervalSec;
        }
        // lib.optionalAttrs options.startLimitBurst.isDefined {
          StartLimitBurst = toString config.startLimitBurst;
        };
    };

  # A job script: NixOS writes `set -e` and the text to a store file.
  jobScript =
    name: text:
    "${
      pkgs.writeShellScriptBin name ''
        set -e
        ${text}
      ''
    }/bin/${name}";

  serviceUnit =
    stage:
    { name, config, ... }:
    {
      imports = [ commonUnit ];
      options =
        {
          environment = mkOption {
            type = types.attrsOf (
              types.nullOr (
                types.oneOf [
                  types.str
                  types.path
                  types.package
                ]
              )
            );
            default = { };
          };
          path = mkOption {
            type = types.listOf (
              types.oneOf [
                types.package
                types.str
              ]
            );
            default = [ ];
          };
          serviceConfig = mkOption {
            type = types.addCheck (types.attrsOf unitOption) checkServiceConfig;
            default = { };
          };
          script = mkOption {
            type = types.lines;
            default = "";
          };
          scriptArgs = mkOption {
            type = types.str;
            default = "";
          };
          preStart = mkOption {
            type = types.lines;
            default = "";
          };
          postStart = mkOption {
            type = types.lines;
            default = "";
          };
          preStop = mkOption {
            type = types.lines;
            default = "";
          };
          postStop = mkOption {
            type = types.lines;
            default = "";
          };
          reload = mkOption {
            type = types.lines;
            default = "";
          };
          # The unit file NixOS would write, in this stand-in's rendering.
          text = mkOption {
            type = types.str;
            readOnly = true;
          };
        }
        # Stage 2 only: stage 1 has no switch-to-configuration.
        // lib.optionalAttrs (stage == 2) {
          restartIfChanged = mkOption {
            type = types.bool;
            default = true;
          };
          reloadIfChanged = mkOption {
            type = types.bool;
            default = false;
          };
          stopIfChanged = mkOption {
            type = types.bool;
            default = true;
          };
          restartTriggers = mkOption {
            type = types.listOf types.unspecified;
            default = [ ];
          };
          reloadTriggers = mkOption {
            type = types.listOf unitOption;
            default = [ ];
          };
          startAt = mkOption {
            type = types.either types.str (types.listOf types.str);
            default = [ ];
          };
        };
      config = lib.mkMerge [
        # systemd-lib.nix: a minimal PATH for stage 2 services, from `path`.
        (lib.mkIf (stage == 2) {
          path = lib.mkAfter [
            pkgs.coreutils
            pkgs.findutils
            pkgs.gnugrep
            pkgs.gnused
            pkgs.systemd
          ];
        })
        {
          environment.PATH = lib.mkIf (config.path != [ ]) (
            "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}"
          );
        }
        (lib.mkIf (config.script != "") {
          serviceConfig.ExecStart = jobScript "${name}-start" config.script + " " + config.scriptArgs;
        })
        (lib.mkIf (config.preStart != "") {
          serviceConfig.ExecStartPre = [ (jobScript "${name}-pre-start" config.preStart) ];
        })
        {
          text =
            renderUnit config
            + "\n[Service]\n"
            + lib.concatStrings (
              lib.mapAttrsToList (n: v: lib.optionalString (v != null) "Environment=${n}=${v}\n") config.environment
            )
            + renderSection config.serviceConfig;
        }
      ];
    };

  mountUnit =
    { config, ... }:
    {
      imports = [ commonUnit ];
      options = {
        what = mkOption { type = types.str; };
        where = mkOption { type = types.str; };
        type = mkOption {
          type = types.str;
          default = "";
        };
        options = mkOption {
          type = types.commas;
          default = "";
        };
        mountConfig = mkOption {
          type = types.attrsOf unitOption;
          default = { };
        };
      };
      config.mountConfig = {
        What = config.what;
        Where = config.where;
      }
      // lib.optionalAttrs (config.type != "") { Type = config.type; }
      // lib.optionalAttrs (config.options != "") { Options = config.options; };
    };

  renderSection =
    attrs:
    lib.concatStrings (
      lib.mapAttrsToList (
        name: value:
        lib.concatMapStrings (v: "${name}=${if v == true then "true" else if v == false then "false" else toString v}\n") (
          lib.toList value
        )
      ) attrs
    );
  renderUnit = unit: "[Unit]\n" + renderSection unit.unitConfig;

  # --- nixos/modules/tasks/filesystems.nix, stage-1.nix, overlayfs.nix --------
  nonEmptyStr = types.addCheck types.str (s: builtins.match "[ \t\n]*" s == null);
  mountPointType = types.addCheck types.str (
    s: builtins.match "[ \t\n]*" s == null && builtins.match ".+/" s == null
  );
  specialFSTypes = [
    "proc"
    "sysfs"
    "tmpfs"
    "ramfs"
    "devtmpfs"
    "devpts"
  ];

  fileSystemEntry =
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        mountPoint = mkOption {
          type = mountPointType;
          default = name;
        };
        device = mkOption {
          type = types.nullOr nonEmptyStr;
          default = null;
        };
        fsType = mkOption {
          type = nonEmptyStr;
          default = "auto";
        };
        options = mkOption {
          type = types.nonEmptyListOf nonEmptyStr;
          default = [ "defaults" ];
        };
        depends = mkOption {
          type = types.listOf mountPointType;
          default = [ ];
        };
        label = mkOption {
          type = types.nullOr nonEmptyStr;
          default = null;
        };
        autoFormat = mkOption {
          type = types.bool;
          default = false;
        };
        autoResize = mkOption {
          type = types.bool;
          default = false;
        };
        noCheck = mkOption {
          type = types.bool;
          default = false;
        };
        neededForBoot = mkOption {
          type = types.bool;
          default = false;
        };
        overlay = {
          lowerdir = mkOption {
            type = types.nullOr (types.nonEmptyListOf types.str);
            default = null;
          };
          upperdir = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          workdir = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          useStage1BaseDirectories = mkOption {
            type = types.bool;
            default = true;
          };
        };
      };
      config = lib.mkMerge [
        { device = lib.mkIf (lib.elem config.fsType specialFSTypes) (lib.mkDefault config.fsType); }
        { device = lib.mkIf (config.label != null) (lib.mkDefault "/dev/disk/by-label/${config.label}"); }
        {
          options = lib.mkMerge [
            (lib.mkIf config.autoFormat [ "x-systemd.makefs" ])
            (lib.mkIf config.autoResize [ "x-systemd.growfs" ])
            (lib.mkIf (fsNeededForBoot config) [ "x-initrd.mount" ])
            (lib.mkIf (config.depends != [ ]) (
              map (
                d: "x-systemd.requires-mounts-for=${lib.optionalString (fsNeededForBoot config) "/sysroot"}${d}"
              ) config.depends
            ))
          ];
        }
        (lib.mkIf (config.overlay.lowerdir != null) (
          let
            prefix = lib.optionalString (
              config.overlay.useStage1BaseDirectories && fsNeededForBoot config
            ) "/sysroot";
          in
          {
            fsType = "overlay";
            device = lib.mkDefault "overlay";
            depends = config.overlay.lowerdir ++ lib.optionals (config.overlay.upperdir != null) [
              config.overlay.upperdir
              config.overlay.workdir
            ];
            options = [
              "lowerdir=${lib.concatMapStringsSep ":" (d: prefix + d) config.overlay.lowerdir}"
            ]
            ++ lib.optionals (config.overlay.upperdir != null) [
              "upperdir=${prefix}${config.overlay.upperdir}"
              "workdir=${prefix}${config.overlay.workdir}"
            ];
          }
        ))
      ];
    };

  fstabLine =
    fs:
    "${
      if fs.device != null then fs.device else throw "No device specified for mount point ‘${fs.mountPoint}’."
    } ${fs.mountPoint} ${fs.fsType} ${lib.concatStringsSep "," fs.options}";

  allFileSystems = lib.attrValues config.fileSystems;

  # --- the kernel parameter type of nixos/modules/system/boot/kernel.nix -------
  kernelParam = types.strMatching ''([^"[:space:]]|"[^"]*")+'';

  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    fileSystems = mkOption {
      type = types.attrsOf (types.submodule fileSystemEntry);
      default = { };
      apply = lib.filterAttrs (_: fs: fs.enable);
    };

    swapDevices = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            device = mkOption { type = types.str; };
            label = mkOption {
              type = types.nullOr types.str;
              default = null;
            };
            size = mkOption {
              type = types.nullOr types.int;
              default = null;
            };
            priority = mkOption {
              type = types.nullOr types.int;
              default = null;
            };
            options = mkOption {
              type = types.nonEmptyListOf types.nonEmptyStr;
              default = [ "defaults" ];
            };
          };
        }
      );
      default = [ ];
    };

    boot = {
      kernelParams = mkOption {
        type = types.listOf kernelParam;
        default = [ ];
      };
      kernelModules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      resumeDevice = mkOption {
        type = types.str;
        default = "";
      };

      # The loaders this stand-in declares (grub's default is on, as in
      # NixOS); refind, external, generationsDir and initScript are left out
      # on purpose, so that the module is seen not to set undeclared ones.
      loader = {
        grub = {
          enable = mkOption {
            type = types.bool;
            default = true;
          };
          devices = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
          device = mkOption {
            type = types.str;
            default = "";
          };
        };
        systemd-boot.enable = mkOption {
          type = types.bool;
          default = false;
        };
        generic-extlinux-compatible.enable = mkOption {
          type = types.bool;
          default = false;
        };
        limine.enable = mkOption {
          type = types.bool;
          default = false;
        };
        efi.canTouchEfiVariables = mkOption {
          type = types.bool;
          default = false;
        };
      };

      initrd = {
        availableKernelModules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        kernelModules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        supportedFilesystems = mkOption {
          type = types.coercedTo (types.listOf types.str) (names: lib.genAttrs names (_: true)) (
            types.attrsOf types.bool
          );
          default = { };
        };
        luks.devices = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.device = mkOption { type = types.str; };
              options.allowDiscards = mkOption {
                type = types.bool;
                default = false;
              };
            }
          );
          default = { };
        };
        systemd = {
          enable = mkOption {
            type = types.bool;
            default = false;
          };
          emergencyAccess = mkOption {
            type = types.oneOf [
              types.bool
              (types.nullOr (types.passwdEntry types.str))
            ];
            default = false;
          };
          initrdBin = mkOption {
            type = types.listOf types.package;
            default = [ ];
          };
          extraBin = mkOption {
            type = types.attrsOf types.path;
            default = { };
          };
          services = mkOption {
            type = types.attrsOf (types.submodule (serviceUnit 1));
            default = { };
          };
        };
      };
    };

    systemd = {
      services = mkOption {
        type = types.attrsOf (types.submodule (serviceUnit 2));
        default = { };
      };
      mounts = mkOption {
        type = types.listOf (types.submodule mountUnit);
        default = [ ];
      };
      network.enable = mkOption {
        type = types.bool;
        default = false;
      };
    };

    services.getty.autologinUser = mkOption {
      type = types.nullOr types.str;
      default = null;
    };

    nix = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      package = mkOption {
        type = types.package;
        default = pkgs.nix;
      };
    };

    system.path = mkOption {
      type = types.package;
      default = pkgs.system-path;
    };

    # What the tests read: derived values, as NixOS derives them.
    system.build = mkOption {
      type = types.lazyAttrsOf types.unspecified;
      default = { };
    };
  };

  config = {
    _module.args = { inherit utils; };

    # grub.nix: an enabled GRUB needs a device.
    assertions = lib.mkIf config.boot.loader.grub.enable [
      {
        assertion = config.boot.loader.grub.devices != [ ] || config.boot.loader.grub.device != "";
        message = "You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.";
      }
    ];

    system.build = {
      inherit failedAssertions;
      # /etc/fstab: every enabled file system, then the swap devices.
      fstab = map fstabLine allFileSystems ++ map (sw: "${sw.device} none swap ${lib.concatStringsSep "," sw.options}") config.swapDevices;
      # The initrd's fstab: the file systems needed for boot.
      initrdFstab = map fstabLine (lib.filter fsNeededForBoot allFileSystems);
      # Like top-level.nix: a system with failed assertions does not build.
      toplevel =
        if failedAssertions != [ ] then
          throw "\nFailed assertions:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failedAssertions}"
        else
          "toplevel";
    };
  };
}
