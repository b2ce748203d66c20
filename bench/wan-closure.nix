# A closure for bench/push's far-away case: `paths` store paths, each referring to the one before it and to
# up to two earlier ones, so 400 deep: the worst case for narinfos, which go up only after those of their
# references, one round trip each. Most are a few KiB, every 25th 1.5 MiB, every 100th 20 MiB, of random
# bytes (so compression does not shrink them): about 110 MB for 400 paths. `nix-build` prints every path.
{ paths ? "400" }:
let
  n = builtins.fromJSON paths;
  mod = i: k: i - (i / k) * k;
  sizeOf = i:
    if mod i 100 == 50 then 20971520
    else if mod i 25 == 10 then 1572864
    else 2048 + mod (i * 997) 6144;
  unique = builtins.foldl' (seen: x: if builtins.elem x seen then seen else seen ++ [ x ]) [ ];
  refsOf = i: if i == 0 then [ ] else unique [ (i - 1) (i / 2) ((i * 7) / 13) ];
  mk = i: derivation {
    name = "cachectl-wan-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    refs = map (builtins.elemAt all) (refsOf i);
    args = [ "-ec" ''
      mkdir "$out"
      head -c ${toString (sizeOf i)} /dev/urandom > "$out/data"
      printf '%s\n' $refs > "$out/refs"
    '' ];
  };
  all = builtins.genList mk n;
in all
