# A closure for bench/push's far-away case, shaped like real software: `paths` store paths in layers of
# `width`, each path referring to one in the layer below and to up to two more from any layer below (so
# `paths / width` deep: 25 for 400). Most are a few KiB, every 25th 1.5 MiB, every 100th 20 MiB, of random
# bytes (so compression does not shrink them): about 110 MB for 400 paths. `nix-build` prints every path.
{ paths ? "400", width ? "16" }:
let
  n = builtins.fromJSON paths;
  w = builtins.fromJSON width;
  mod = i: k: i - (i / k) * k;
  sizeOf = i:
    if mod i 100 == 50 then 20971520
    else if mod i 25 == 10 then 1572864
    else 2048 + mod (i * 997) 6144;
  unique = builtins.foldl' (seen: x: if builtins.elem x seen then seen else seen ++ [ x ]) [ ];
  below = i: (i / w) * w;
  refsOf = i: if i < w then [ ] else unique [ (i - w) (mod (i * 7) (below i)) (mod (i * 13 + 5) (below i)) ];
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
