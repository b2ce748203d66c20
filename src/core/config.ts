import { parseCacheUrl, type CacheUrl } from './cache-url.js';
import { parseDuration } from './duration.js';
import { CachectlError } from './errors.js';
import { COMPRESSIONS, type Compression } from './narinfo.js';
import { parsePublicKey, type PublicKey } from './signing.js';
import { DEFAULT_OBJECT_HEADERS, withOverrides, type ObjectHeaders, type ObjectKind } from './object-headers.js';
import {
  CONFIG_KEYS,
  DEFAULT_GRACE,
  DEFAULT_JOBS,
  DEFAULT_OLDER_THAN,
  DEFAULT_QUEUE,
  flagName,
  OPTIONS,
  type ConfigFlags,
  type OptionKey,
  type OptionSpec,
} from './options.js';

export { CONFIG_KEYS, ENV_NAMES, type ConfigFlags } from './options.js';

/** Where Nix keeps build logs unless NIX_LOG_DIR says otherwise. */
export const DEFAULT_NIX_LOG_DIR = '/nix/var/log/nix';

/** The options common to all commands, parsed once: flags, then environment, then config file, then defaults. */
export interface Config {
  readonly cacheUrl: CacheUrl | undefined;
  readonly queue: string;
  /** where queued paths are made GC roots of the local store until uploaded */
  readonly gcRoots: string;
  /** the local store's database, where Nix keeps it: `$NIX_STATE_DIR/db/db.sqlite` */
  readonly nixDb: string;
  /** where Nix keeps build logs: `$NIX_LOG_DIR`, or /nix/var/log/nix */
  readonly nixLogDir: string;
  readonly secretKeyFiles: readonly string[];
  readonly jobs: number;
  readonly compression: Compression;
  /** whether a NAR's listing (`<hash>.ls`) is written with it */
  readonly narListing: boolean;
  /** key names whose signature marks a path as upstream's: not uploaded */
  readonly skipSignedBy: readonly string[];
  /** the headers each kind of object goes up with on S3 */
  readonly objectHeaders: Readonly<Record<ObjectKind, ObjectHeaders>>;
  /** the external signer, run with sh -c */
  readonly signerCommand: string | undefined;
  /** the keys `verify` checks signatures against, and the signer command's signatures before use */
  readonly trustedPublicKeys: readonly PublicKey[];
  /** where the daemon serves /metrics and /healthz */
  readonly metricsListen: ListenAddress | undefined;
  /** gc: narinfos uploaded within this are roots */
  readonly olderThanMs: number;
  /** gc: how long an object stays marked before it is deleted */
  readonly graceMs: number;
  /** gc: where parsed narinfos are kept between runs, when not the default place */
  readonly metadataCache: string | undefined;
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** The cache, for the commands that talk to one: it has no default. */
export function requiredCacheUrl(config: Config): CacheUrl {
  if (config.cacheUrl === undefined) {
    throw new CachectlError('CONFIG_INVALID', 'no cache given: pass --to URL or set CACHECTL_TO');
  }
  return config.cacheUrl;
}

const MAX_JOBS = 256;

/**
 * Resolves the configuration, reporting every problem at once (unknown keys in the file included).
 * `fileText` is the config file's content and `fileName` its path, when there is one.
 */
export function resolveConfig(
  flags: ConfigFlags,
  env: Readonly<Record<string, string | undefined>>,
  file?: { name: string; text: string },
): Config {
  const problems: string[] = [];
  let fileValues: Record<string, unknown> = {};
  if (file !== undefined) {
    const expected = 'it must hold one JSON object, such as {"to": "s3://bucket?region=eu-west-1"}';
    try {
      const parsed: unknown = JSON.parse(file.text);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed))
        fileValues = parsed as Record<string, unknown>;
      else
        problems.push(
          `config file ${file.name} holds ${Array.isArray(parsed) ? 'a list' : JSON.stringify(parsed)}; ${expected}`,
        );
    } catch (err) {
      problems.push(`config file ${file.name} is not valid JSON (${(err as Error).message}); ${expected}`);
    }
    for (const key of Object.keys(fileValues)) {
      if (!(key in CONFIG_KEYS)) {
        problems.push(
          `config file ${file.name} has the unknown key ${JSON.stringify(key)} (known: ` +
            `${Object.keys(CONFIG_KEYS).join(', ')})`,
        );
      }
    }
  }
  // Each setting from its flag, else its environment variable, else the config file.
  const raw = (key: OptionKey): string | string[] | undefined => {
    const spec: OptionSpec = OPTIONS[key];
    const flag = flags[key];
    if (flag !== undefined) return flag;
    const fromEnv = nonEmpty(env[spec.env]);
    if (fromEnv !== undefined) {
      return spec.listSeparator === undefined
        ? fromEnv
        : fromEnv.split(spec.listSeparator === ' ' ? /\s+/ : spec.listSeparator).filter((item) => item !== '');
    }
    const value = fileValues[key];
    if (value === undefined) return undefined;
    if (spec.listSeparator !== undefined) {
      if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value;
      problems.push(`config file ${file?.name ?? ''}: key ${key} must be a list of strings`);
      return undefined;
    }
    if (spec.fileNumber === true && typeof value === 'number') return String(value);
    if (spec.boolean === true && typeof value === 'boolean') return String(value);
    if (spec.fileNumber !== true && spec.boolean !== true && typeof value === 'string') return value;
    const type = spec.fileNumber === true ? 'number' : spec.boolean === true ? 'boolean' : 'string';
    problems.push(`config file ${file?.name ?? ''}: key ${key} must be a ${type}`);
    return undefined;
  };
  const text = (key: OptionKey): string | undefined => {
    const value = raw(key);
    return Array.isArray(value) ? value.join(' ') : value;
  };
  const list = (key: OptionKey): string[] => {
    const value = raw(key);
    return value === undefined ? [] : Array.isArray(value) ? value : [value];
  };
  const duration = (key: 'olderThan' | 'grace', defaultText: string): number => {
    try {
      return parseDuration(text(key) ?? defaultText, flagName(OPTIONS[key]));
    } catch (err) {
      problems.push((err as Error).message);
      return 0;
    }
  };

  const toText = text('to');
  let cacheUrl: CacheUrl | undefined;
  if (toText !== undefined) {
    try {
      cacheUrl = parseCacheUrl(toText);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }

  const compressionText = text('compression') ?? 'zstd';
  if (!(COMPRESSIONS as readonly string[]).includes(compressionText)) {
    problems.push(`unknown compression ${JSON.stringify(compressionText)}; use one of ${COMPRESSIONS.join(', ')}`);
  }

  const jobsText = text('jobs') ?? String(DEFAULT_JOBS);
  const jobs = Number(jobsText);
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_JOBS) {
    problems.push(`jobs ${JSON.stringify(jobsText)} must be a whole number from 1 to ${MAX_JOBS}`);
  }

  const keyFiles = list('secretKeyFiles');
  const skipSignedBy = list('skipSignedBy');
  for (const name of skipSignedBy) {
    if (!KEY_NAME.test(name))
      problems.push(
        `skip-signed-by ${JSON.stringify(name)} is not a key name such as cache.nixos.org-1 (the part before ':' of ` +
          `a public key)`,
      );
  }

  const trustedPublicKeys: PublicKey[] = [];
  for (const keyText of list('trustedPublicKeys')) {
    try {
      trustedPublicKeys.push(parsePublicKey(keyText));
    } catch (err) {
      problems.push(`trusted-public-key: ${(err as Error).message} (as nix key convert-secret-to-public prints it)`);
    }
  }

  const signerCommand = text('signerCommand');
  if (signerCommand !== undefined && trustedPublicKeys.length === 0)
    problems.push(
      'signer-command needs trusted-public-key NAME:KEY, the public key its signatures are checked against',
    );

  const objectHeaders = withOverrides(
    withOverrides(DEFAULT_OBJECT_HEADERS, 'cacheControl', 'cache-control', list('cacheControl'), problems),
    'contentType',
    'content-type',
    list('contentType'),
    problems,
  );

  const listenText = text('metricsListen');
  let metricsListen: ListenAddress | undefined;
  if (listenText !== undefined) {
    metricsListen = parseListenAddress(listenText);
    if (metricsListen === undefined) {
      problems.push(
        `metrics-listen ${JSON.stringify(listenText)} must be PORT, HOST:PORT or [IPV6]:PORT, such as 127.0.0.1:9108`,
      );
    }
  }

  const narListingText = text('narListing') ?? 'true';
  if (narListingText !== 'true' && narListingText !== 'false')
    problems.push(`nar-listing ${JSON.stringify(narListingText)} must be true or false`);

  const olderThanMs = duration('olderThan', DEFAULT_OLDER_THAN);
  const graceMs = duration('grace', DEFAULT_GRACE);

  if (problems.length > 0) {
    throw new CachectlError('CONFIG_INVALID', problems.join('\n'));
  }
  const nixStateDir = nonEmpty(env['NIX_STATE_DIR']) ?? '/nix/var/nix';
  return Object.freeze({
    cacheUrl,
    queue: text('queue') ?? DEFAULT_QUEUE,
    gcRoots: text('gcRoots') ?? `${nixStateDir}/gcroots/cachectl`,
    nixDb: `${nixStateDir}/db/db.sqlite`,
    nixLogDir: nonEmpty(env['NIX_LOG_DIR']) ?? DEFAULT_NIX_LOG_DIR,
    secretKeyFiles: Object.freeze([...keyFiles]),
    jobs,
    compression: compressionText as Compression,
    narListing: narListingText !== 'false',
    skipSignedBy: Object.freeze([...skipSignedBy]),
    trustedPublicKeys: Object.freeze(trustedPublicKeys),
    signerCommand,
    objectHeaders: Object.freeze(objectHeaders),
    metricsListen,
    olderThanMs,
    graceMs,
    metadataCache: text('metadataCache'),
  });
}

const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** `9108`, `127.0.0.1:9108`, `[::1]:9108`; port 0 picks a free one. */
export function parseListenAddress(text: string): ListenAddress | undefined {
  const match = /^(?:(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):)?(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || port > 65535) return undefined;
  return { host: match[1] ?? match[2] ?? '127.0.0.1', port };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
