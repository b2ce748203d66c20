# Several large NARs at once, for the memory bound of a push: `n` paths of `mb` MiB of random data each.
{ n ? "6", mb ? "60" }:
builtins.genList (i: derivation {
  name = "cachectl-bench-big-${toString i}-${mb}mb";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-ec" ''mkdir -p "$out"; head -c $(( ${mb} * 1048576 )) /dev/urandom > "$out/data"'' ];
}) (builtins.fromJSON n)
