# A host's configuration as nixos-generate-config and a user would write it:
# root, /boot and a separate /nix on one disk, a data disk, swap on the disk
# that is also the resume device, a LUKS volume, systemd-boot, a tmpfs, a
# virtiofs share and an NFS mount. With the guest module imported, only what
# a VM can have must remain (nix/tests/default.nix checks what does);
# flake.nix's checks build it with real NixOS where Nix can fetch nixpkgs.
{
  fileSystems."/" = {
    device = "/dev/disk/by-uuid/0b5e1f6a-root";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/sda2";
    fsType = "vfat";
    options = [
      "fmask=0077"
      "dmask=0077"
    ];
  };
  fileSystems."/nix" = {
    device = "/dev/sda4";
    fsType = "ext4";
    neededForBoot = true;
  };
  fileSystems."/data" = {
    label = "data";
    fsType = "xfs";
  };
  fileSystems."/tmp" = {
    fsType = "tmpfs";
    options = [ "size=2G" ];
  };
  fileSystems."/srv/src" = {
    device = "src";
    fsType = "virtiofs";
  };
  fileSystems."/mnt/nfs" = {
    device = "server:/export";
    fsType = "nfs4";
  };
  swapDevices = [ { device = "/dev/sda3"; } ];
  boot.resumeDevice = "/dev/sda3";
  boot.initrd.luks.devices.crypt.device = "/dev/sda5";
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  boot.initrd.availableKernelModules = [
    "nvme"
    "ahci"
  ];
}
