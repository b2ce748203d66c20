# A chain of `length` tiny store paths, each referring to the one before, for bench/push: added with
# builtins.toFile (text files may refer to other such files), so nothing is built. Evaluate with
# `nix-instantiate --read-write-mode --eval` to get the last path.
{ length ? "1000", nonce ? "" }:
let
  link = n:
    if n == 0 then builtins.toFile "cachectl-chain${nonce}-0" "link 0\n"
    else builtins.toFile "cachectl-chain${nonce}-${toString n}" "link ${toString n} after ${link (n - 1)}\n";
in link (builtins.fromJSON length - 1)
