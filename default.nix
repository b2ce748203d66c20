# The cachectl package, for nixos-module.nix (its default `package`) and for nix-build / nix-env -f:
#   pkgs.callPackage ./default.nix { }
# Dependencies come from package-lock.json (importNpmLock), so there is no npmDepsHash to keep in step.
{ lib, buildNpmPackage, importNpmLock, nodejs_20, python3 }:

buildNpmPackage {
  pname = "cachectl";
  version = (lib.importJSON ./package.json).version;

  src = lib.cleanSourceWith {
    src = ./.;
    filter = path: type: !(builtins.elem (baseNameOf path) [ ".git" "node_modules" "dist" "demo-cache" ]);
  };

  nodejs = nodejs_20;
  npmDeps = importNpmLock { npmRoot = ./.; };
  npmConfigHook = importNpmLock.npmConfigHook;
  # better-sqlite3 and zstd-napi compile their native addons with node-gyp.
  nativeBuildInputs = [ python3 ];

  # `npm run build` compiles src, test and bench; package.json's "files" installs dist/src, hook, systemd,
  # monitoring and nixos-module.nix under lib/node_modules/cachectl, and bin/cachectl.

  meta = {
    description = "Upload what Nix builds to a binary cache without slowing builds, and keep that cache small";
    license = lib.licenses.mit;
    mainProgram = "cachectl";
    platforms = lib.platforms.linux;
  };
}
