# The guest. sonix-run's module (imported in flake.nix) supplies everything
# the VM needs to boot; this file is yours to change.
{ pkgs, ... }:
{
  networking.hostName = "vm";

  environment.systemPackages = [ pkgs.htop ];

  # Root is logged in on the console (sonix-run.autologin, on by default).
  # To boot with a writable /nix/store on tmpfs:
  # sonix-run.writableStore.enable = true;
  # What `sonix-run --state FILE` keeps (default: /var and /home):
  # sonix-run.state.directories = [ "/var" "/home" "/root" ];
  # Addresses from `sonix-run --vlan` (sonix.ip= on the kernel command line):
  # sonix-run.staticAddress.enable = true;

  system.stateVersion = "26.05";
}
