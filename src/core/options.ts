/**
 * Every setting of cachectl, declared once: its flag, environment variable, config file key (the table's key),
 * default and help. Flags, `--help`, the environment, the config file and the NixOS module's test all derive
 * from this table; core/config.ts parses and checks the values.
 */
export interface OptionSpec {
  /** commander's flag, with its value name */
  readonly flag: string;
  readonly env: string;
  readonly help: string;
  /** the default as help shows it (applied by resolveConfig) */
  readonly defaultText?: string;
  /** a list: the flag is repeatable, the environment variable split on this, the file key a JSON list */
  readonly listSeparator?: ':' | ' ' | '\n';
  /** the config file may give it as a JSON number */
  readonly fileNumber?: true;
  /** true or false; the config file may give it as a JSON boolean */
  readonly boolean?: true;
  /** not a key of the config file (it names the file) */
  readonly notInFile?: true;
}

export const DEFAULT_QUEUE = '/var/lib/cachectl/queue.db';
export const DEFAULT_JOBS = 8;
export const DEFAULT_OLDER_THAN = '720h';
export const DEFAULT_GRACE = '6h';

export const OPTIONS = {
  config: {
    flag: '--config <file>',
    env: 'CACHECTL_CONFIG',
    help: 'JSON config file with the same settings, each under its config key (e.g. {"to": "s3://…", "jobs": 4})',
    notInFile: true,
  },
  to: {
    flag: '--to <url>',
    env: 'CACHECTL_TO',
    help: "the cache: file:///DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R (Nix's own S3 URL)",
  },
  queue: {
    flag: '--queue <file>',
    env: 'CACHECTL_QUEUE',
    help: 'the SQLite upload queue',
    defaultText: DEFAULT_QUEUE,
  },
  gcRoots: {
    flag: '--gc-roots <dir>',
    env: 'CACHECTL_GC_ROOTS',
    help: 'where queued paths are GC roots of the local store until uploaded',
    defaultText: '$NIX_STATE_DIR/gcroots/cachectl',
  },
  secretKeyFiles: {
    flag: '--secret-key-file <file>',
    env: 'CACHECTL_SECRET_KEY_FILES',
    help: 'Nix-format Ed25519 secret key to sign with',
    listSeparator: ':',
  },
  signerCommand: {
    flag: '--signer-command <cmd>',
    env: 'CACHECTL_SIGNER_COMMAND',
    help:
      'an external signer, run once with sh -c: a fingerprint per line in, NAME:SIGNATURE per line out; each ' +
      'signature is checked against --trusted-public-key before use',
  },
  jobs: {
    flag: '--jobs <n>',
    env: 'CACHECTL_JOBS',
    help: 'NARs compressed in parallel, with up to 8 times as many small ones in flight; for gc, requests at once (at least 16)',
    defaultText: String(DEFAULT_JOBS),
    fileNumber: true,
  },
  compression: {
    flag: '--compression <kind>',
    env: 'CACHECTL_COMPRESSION',
    help: 'NAR compression: zstd, xz or none',
    defaultText: 'zstd',
  },
  narListing: {
    flag: '--nar-listing <bool>',
    env: 'CACHECTL_NAR_LISTING',
    help:
      "write each NAR's listing (<hash>.ls, as nix copy's write-nar-listing=true; for tools that browse a cache, " +
      'such as nix-index, as Nix reads the NAR itself): true or false',
    defaultText: 'true',
    boolean: true,
  },
  skipSignedBy: {
    flag: '--skip-signed-by <keyname>',
    env: 'CACHECTL_SKIP_SIGNED_BY',
    help: 'do not upload paths signed by this key (e.g. cache.nixos.org-1): clients get them from that cache',
    listSeparator: ' ',
  },
  cacheControl: {
    flag: '--cache-control <class=value>',
    env: 'CACHECTL_CACHE_CONTROL',
    help:
      'the Cache-Control header of a class of object on S3, for proxies and CDNs: CLASS one of narinfo, cacheInfo, ' +
      'nar, listing, log, realisation (e.g. "narinfo=public, max-age=60")',
    defaultText:
      'narinfos, nix-cache-info, logs and realisations public, max-age=300; NARs and listings public, ' +
      'max-age=31536000, immutable',
    listSeparator: '\n',
  },
  contentType: {
    flag: '--content-type <class=value>',
    env: 'CACHECTL_CONTENT_TYPE',
    help: 'the Content-Type of a class of object on S3, as for --cache-control (e.g. "log=text/plain")',
    defaultText: "what Nix's own binary cache stores send",
    listSeparator: '\n',
  },
  trustedPublicKeys: {
    flag: '--trusted-public-key <key>',
    env: 'CACHECTL_TRUSTED_PUBLIC_KEYS',
    help:
      "a key signatures are checked against (by verify, and --signer-command's before use), NAME:BASE64 as in " +
      "nix.conf's trusted-public-keys",
    listSeparator: ' ',
  },
  metricsListen: {
    flag: '--metrics-listen <addr>',
    env: 'CACHECTL_METRICS_LISTEN',
    help: 'serve Prometheus /metrics and /healthz on PORT, HOST:PORT or [IPV6]:PORT (a bare port listens on 127.0.0.1)',
  },
  olderThan: {
    flag: '--older-than <duration>',
    env: 'CACHECTL_OLDER_THAN',
    help: 'narinfos uploaded within this are kept, with their closures (e.g. 720h, 30m, 0s)',
    defaultText: DEFAULT_OLDER_THAN,
  },
  grace: {
    flag: '--grace <duration>',
    env: 'CACHECTL_GRACE',
    help: 'how long an object stays marked before it is deleted, and how old it must be to be marked',
    defaultText: DEFAULT_GRACE,
  },
  metadataCache: {
    flag: '--metadata-cache <file>',
    env: 'CACHECTL_METADATA_CACHE',
    help: 'where parsed narinfos are kept between runs',
    defaultText: 'one file per cache under $XDG_CACHE_HOME/cachectl',
  },
} as const satisfies Record<string, OptionSpec>;

export type OptionKey = keyof typeof OPTIONS;

/** Flag values as commander hands them over: a list for a repeatable flag, undefined when not given. */
export type ConfigFlags = {
  [K in OptionKey]?: ((typeof OPTIONS)[K] extends { listSeparator: string } ? string[] : string) | undefined;
};

const entries = Object.entries(OPTIONS) as [OptionKey, OptionSpec][];

/** The config file's keys, each with its flag. */
export const CONFIG_KEYS: Readonly<Record<string, string>> = Object.fromEntries(
  entries.filter(([, spec]) => spec.notInFile !== true).map(([key, spec]) => [key, flagName(spec)]),
);

export const ENV_NAMES = Object.fromEntries(entries.map(([key, spec]) => [key, spec.env])) as Record<OptionKey, string>;

/** `--to <url>` → `--to`. */
export function flagName(spec: OptionSpec): string {
  return spec.flag.split(' ')[0] ?? spec.flag;
}

/** The help line of an option: what it is, its environment variable, its config key and its default. */
export function optionHelp(key: OptionKey): string {
  const spec: OptionSpec = OPTIONS[key];
  const separator = { ':': "':'", ' ': 'space', '\n': 'newline' } as const;
  const env =
    spec.listSeparator === undefined
      ? `env ${spec.env}`
      : `repeatable; env ${spec.env}, ${separator[spec.listSeparator]}-separated`;
  const fileKey = spec.notInFile === true ? '' : `; config key ${key}`;
  const defaultText = spec.defaultText === undefined ? '' : `; default ${spec.defaultText}`;
  return `${spec.help} (${env}${fileKey}${defaultText})`;
}
