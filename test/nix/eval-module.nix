# Evaluates nixos-module.nix as the NixOS module system would for what the module uses, without nixpkgs
# (not reachable from these machines): options get their defaults or the given settings, mkIf is resolved.
# The result, as JSON: the option paths and the config the module sets.
#
#   nix-instantiate --eval --strict --json --read-write-mode test/nix/eval-module.nix \
#     --argstr settingsJson '{"enable": true, "package": "/pkg", "to": "file:///x"}' --argstr packages /usr
{ settingsJson, packages }:
let
  option = attrs: attrs // { _type = "option"; };
  lib = {
    mkOption = option;
    mkEnableOption = what: option { type = "bool"; default = false; description = "Whether to enable ${what}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    types = {
      str = "str";
      bool = "bool";
      package = "package";
      listOf = type: "listOf ${type}";
      attrsOf = type: "attrsOf ${type}";
      nullOr = type: "nullOr ${type}";
      enum = values: "one of ${builtins.concatStringsSep ", " values}";
      ints.between = low: high: "int from ${toString low} to ${toString high}";
    };
  };
  # Files as writeText and writeShellScript make them (here with the shell found on PATH); programs from `packages`.
  pkgs = {
    writeText = name: text: builtins.toFile name text;
    writeShellScript = name: text: builtins.toFile name "#!/bin/sh\n${text}";
    sqlite = packages;
    coreutils = packages;
    callPackage = _: _: throw "the default package is not built here: give settings.package";
  };
  module = import ../../nixos-module.nix { inherit lib pkgs config; };
  settings = builtins.fromJSON settingsJson;
  withSettings = options: values: builtins.mapAttrs
    (name: declared:
      if (declared._type or null) == "option" then values.${name} or declared.default
      else withSettings declared (values.${name} or { }))
    options;
  config = {
    services.cachectl = withSettings module.options.services.cachectl settings;
    systemd.package = packages;
  };
  resolve = value:
    if builtins.isAttrs value then
      (if (value._type or null) == "if" then (if value.condition then resolve value.content else null)
       else builtins.mapAttrs (_: resolve) value)
    else if builtins.isList value then map resolve value
    else value;
  optionPaths = prefix: options: builtins.concatLists (map
    (name:
      if (options.${name}._type or null) == "option" then [ "${prefix}${name}" ]
      else optionPaths "${prefix}${name}." options.${name})
    (builtins.attrNames options));
in
{
  options = optionPaths "" module.options.services.cachectl;
  config = resolve module.config;
}
