# The demo's build: a small program with a library it references, built without nixpkgs so it works offline.
# `nonce` makes a fresh build each time, as a real `nix-build` of new code would be.
{ nonce }:
let
  mk = name: script: attrs: derivation ({
    name = "cachectl-demo-${name}-${nonce}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-ec" script ];
    PATH = "/usr/bin:/bin";
  } // attrs);
  greeting = mk "greeting" ''
    mkdir -p "$out/share"
    printf 'hello from a binary cache\n' > "$out/share/greeting.txt"
  '' {};
in mk "hello" ''
  mkdir -p "$out/bin"
  printf '#!/bin/sh\ncat %s/share/greeting.txt\n' "$greeting" > "$out/bin/hello"
  chmod +x "$out/bin/hello"
'' { inherit greeting; }
