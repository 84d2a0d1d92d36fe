{
  description = "A NixOS system that boots under sonix-run, without a disk image";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    sonix-run = {
      url = "github:sonix-run/sonix-run";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    { nixpkgs, sonix-run, ... }:
    let
      vm =
        system:
        nixpkgs.lib.nixosSystem {
          modules = [
            sonix-run.nixosModules.default
            ./configuration.nix
            { nixpkgs.hostPlatform = system; }
          ];
        };
    in
    {
      # `sonix-run .#vm` builds and boots nixosConfigurations.vm.
      nixosConfigurations.vm = vm "x86_64-linux";
      nixosConfigurations.vm-aarch64 = vm "aarch64-linux";
    };
}
