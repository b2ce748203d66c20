# services.cachectl: every path this machine builds goes to a binary cache, and optionally a daily GC keeps that
# cache small. The units match systemd/*.service and *.timer (a test compares them); the settings go to the
# daemon as a JSON config file whose keys are cachectl's (CONFIG_KEYS in src/core/config.ts).
#
#   imports = [ /path/to/cachectl/nixos-module.nix ];
#   services.cachectl = {
#     enable = true;
#     to = "s3://my-cache?region=eu-west-1";
#     secretKeyFiles = [ "/etc/nix/cache.sec" ];
#     credentialsFile = "/etc/cachectl/aws.env";
#   };
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkEnableOption mkIf mkOption types literalExpression;
  cfg = config.services.cachectl;

  queue = "/var/lib/cachectl/queue.db";
  gcRoots = "/nix/var/nix/gcroots/cachectl";
  cachectl = "${cfg.package}/bin/cachectl";

  # What the daemon, the GC and pin read: cachectl's config keys.
  configFile = pkgs.writeText "cachectl.json" (builtins.toJSON ({
    inherit (cfg) to jobs compression narListing skipSignedBy cacheControl contentType;
    inherit (cfg.gc) olderThan grace;
    inherit queue gcRoots;
  } // (if cfg.metricsListen == null then { } else { inherit (cfg) metricsListen; })
    // (if cfg.signerCommand == null then { } else { inherit (cfg) signerCommand trustedPublicKeys; })));

  # systemd copies each key into the service's credentials directory (%d), readable by it alone.
  keyCredentials = builtins.genList (i: "signing-key-${toString i}") (builtins.length cfg.secretKeyFiles);
  keyFlags = builtins.concatStringsSep " " (map (name: "--secret-key-file %d/${name}") keyCredentials);

  # Nix runs the hook with its own environment: give it the queue and every program it runs.
  hook = pkgs.writeShellScript "cachectl-post-build-hook" ''
    export CACHECTL_QUEUE=${queue}
    export CACHECTL_GC_ROOTS=${gcRoots}
    export CACHECTL_SQLITE3=${pkgs.sqlite}/bin/sqlite3
    export PATH=${pkgs.coreutils}/bin
    exec ${cfg.package}/lib/node_modules/cachectl/hook/post-build-hook
  '';

  # The hardening of systemd/cachectl.service and cachectl-gc.service. Never MemoryDenyWriteExecute: Node's
  # JIT needs writable and executable pages.
  hardening = {
    UMask = "0077";
    CapabilityBoundingSet = "";
    NoNewPrivileges = "yes";
    ProtectSystem = "strict";
    ProtectHome = "yes";
    PrivateTmp = "yes";
    PrivateDevices = "yes";
    ProtectKernelTunables = "yes";
    ProtectKernelModules = "yes";
    ProtectKernelLogs = "yes";
    ProtectControlGroups = "yes";
    ProtectClock = "yes";
    ProtectHostname = "yes";
    RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
    RestrictNamespaces = "yes";
    RestrictRealtime = "yes";
    RestrictSUIDSGID = "yes";
    LockPersonality = "yes";
    SystemCallArchitectures = "native";
    # @pkey: V8 calls pkey_alloc at start, and @system-service lacks it (SIGSYS).
    SystemCallFilter = "@system-service @pkey";
    StateDirectory = "cachectl";
    StateDirectoryMode = "0700";
  };
  credentials = if cfg.credentialsFile == null then { } else { EnvironmentFile = cfg.credentialsFile; };
in
{
  options.services.cachectl = {
    enable = mkEnableOption "cachectl, which uploads every path Nix builds here to a binary cache";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./default.nix { };
      defaultText = literalExpression "pkgs.callPackage ./default.nix { }";
      description = "The cachectl package.";
    };

    to = mkOption {
      type = types.str;
      example = "s3://my-cache?region=eu-west-1";
      description = ''
        The cache: s3://BUCKET/PREFIX?endpoint=URL&region=R (Nix's S3 URL syntax; region "auto" for R2) or
        file:///DIR.
      '';
    };

    secretKeyFiles = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/etc/nix/cache.sec" ];
      description = ''
        Nix-format Ed25519 secret keys to sign narinfos with (cachectl keygen). Paths as strings, outside the
        store: they are handed to the daemon as systemd credentials. Empty: unsigned.
      '';
    };

    credentialsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/cachectl/aws.env";
      description = ''
        An environment file with the S3 credentials (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…), read by
        systemd, kept out of the store. Null: the AWS SDK's default chain (instance roles, …).
      '';
    };

    jobs = mkOption {
      type = types.ints.between 1 256;
      default = 8;
      description = "NARs uploaded in parallel.";
    };

    compression = mkOption {
      type = types.enum [ "zstd" "xz" "none" ];
      default = "zstd";
      description = "NAR compression.";
    };

    narListing = mkOption {
      type = types.bool;
      default = true;
      description = "Write each NAR's listing (<hash>.ls), which `nix store ls --store` reads.";
    };

    skipSignedBy = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "cache.nixos.org-1" ];
      description = "Key names whose signature marks a path as another cache's: such paths are not uploaded.";
    };

    signerCommand = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/current-system/sw/bin/my-hsm-signer --key cache-1";
      description = ''
        An external signer, run by the daemon with sh -c: a fingerprint per line in, NAME:SIGNATURE per line out.
        Each signature is checked against trustedPublicKeys before it is used.
      '';
    };

    trustedPublicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "cache.example.org-1:..." ];
      description = "The public keys the signerCommand's signatures are checked against (NAME:BASE64).";
    };

    cacheControl = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "narinfo=public, max-age=60" ];
      description = ''
        Cache-Control headers by class of object (narinfo, cacheInfo, nar, listing, log, realisation), for the
        proxies and CDNs in front of an S3 bucket; the defaults keep narinfos 5 minutes and NARs forever.
      '';
    };

    contentType = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "log=text/plain" ];
      description = "Content-Type headers by class of object, as for cacheControl.";
    };

    metricsListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:9108";
      description = "Where the daemon serves Prometheus /metrics and /healthz (PORT, HOST:PORT or [IPV6]:PORT).";
    };

    gc = {
      enable = mkEnableOption "a timer that runs cachectl gc on the cache (one machine per cache is enough)";

      olderThan = mkOption {
        type = types.str;
        default = "720h";
        description = "Narinfos uploaded within this are kept, with their closures (Go-style duration).";
      };

      grace = mkOption {
        type = types.str;
        default = "6h";
        description = "How long an unreachable object stays marked before it is deleted.";
      };

      schedule = mkOption {
        type = types.str;
        default = "daily";
        description = "When the GC runs (systemd OnCalendar).";
      };

      randomizedDelaySec = mkOption {
        type = types.str;
        default = "1h";
        description = "A random delay up to this before each run (systemd RandomizedDelaySec).";
      };
    };

    pins = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
      example = literalExpression "{ system = [ config.system.build.toplevel ]; }";
      description = ''
        Pins the GC keeps whatever their age: name → store paths the cache has. They are set before each GC
        run; a pin whose paths are not in the cache yet keeps what it held.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = map (file: {
      assertion = builtins.substring 0 1 file == "/" && builtins.substring 0 11 file != "/nix/store/";
      message = "services.cachectl.secretKeyFiles: ${file} must be an absolute path outside the Nix store"
        + " (a secret in the store is readable by all)";
    }) cfg.secretKeyFiles;

    nix.settings.post-build-hook = hook;

    systemd.services.cachectl = {
      description = "cachectl: upload what Nix builds to a binary cache";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "nix-daemon.service" ];
      wants = [ "network-online.target" ];
      environment = {
        CACHECTL_QUEUE = queue;
        CACHECTL_GC_ROOTS = gcRoots;
      };
      serviceConfig = hardening // credentials // {
        Type = "notify";
        ExecStart = "${cachectl} daemon --config ${configFile} ${keyFlags}";
        LoadCredential = builtins.genList
          (i: "${builtins.elemAt keyCredentials i}:${builtins.elemAt cfg.secretKeyFiles i}")
          (builtins.length keyCredentials);
        TimeoutStartSec = "infinity";
        WatchdogSec = "60s";
        KillMode = "mixed";
        TimeoutStopSec = "90s";
        Restart = "on-failure";
        RestartSec = "5s";
        # Nix's state directory: the GC roots, and the database, whose -wal and -shm SQLite creates to read it
        # when no Nix process has it open (systemd/cachectl.service says more).
        ReadWritePaths = "-/nix/var/nix";
      };
    };

    systemd.services.cachectl-gc = mkIf cfg.gc.enable {
      description = "cachectl: delete from the binary cache what nothing needs";
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      environment = {
        CACHECTL_QUEUE = queue;
        XDG_CACHE_HOME = "/var/cache/cachectl";
      };
      serviceConfig = hardening // credentials // {
        Type = "oneshot";
        # "-": a pin whose paths are not uploaded yet keeps what it held, and the GC runs anyway.
        ExecStartPre = map
          (name: "-${cachectl} pin --config ${configFile} ${name} ${builtins.concatStringsSep " " cfg.pins.${name}}")
          (builtins.attrNames cfg.pins);
        ExecStart = "${cachectl} gc --config ${configFile}";
        CacheDirectory = "cachectl";
        Nice = "10";
        IOSchedulingClass = "idle";
      };
    };

    systemd.timers.cachectl-gc = mkIf cfg.gc.enable {
      description = "cachectl: scheduled GC of the binary cache";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.gc.schedule;
        RandomizedDelaySec = cfg.gc.randomizedDelaySec;
        Persistent = true;
      };
    };
  };
}
