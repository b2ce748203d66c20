import { parseCacheUrl, type CacheUrl } from './cache-url.js';
import { CachectlError } from './errors.js';
import { COMPRESSIONS, type Compression } from './narinfo.js';

/** The options common to all commands, parsed once: flags, then environment, then config file, then defaults. */
export interface Config {
  readonly cacheUrl: CacheUrl | undefined;
  readonly queue: string;
  /** where queued paths are made GC roots of the local store until uploaded */
  readonly gcRoots: string;
  /** the local store's database, where Nix keeps it: `$NIX_STATE_DIR/db/db.sqlite` */
  readonly nixDb: string;
  readonly secretKeyFiles: readonly string[];
  readonly jobs: number;
  readonly compression: Compression;
  /** key names whose signature marks a path as upstream's: not uploaded */
  readonly skipSignedBy: readonly string[];
  /** where the daemon serves /metrics and /healthz */
  readonly metricsListen: ListenAddress | undefined;
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** Flag values as commander hands them over (undefined when not given). */
export interface ConfigFlags {
  to?: string | undefined;
  queue?: string | undefined;
  gcRoots?: string | undefined;
  secretKeyFile?: string[] | undefined;
  jobs?: string | undefined;
  compression?: string | undefined;
  skipSignedBy?: string[] | undefined;
  metricsListen?: string | undefined;
}

/** Keys of the JSON config file, each naming its flag. */
export const CONFIG_KEYS = {
  to: '--to',
  queue: '--queue',
  gcRoots: '--gc-roots',
  secretKeyFiles: '--secret-key-file',
  jobs: '--jobs',
  compression: '--compression',
  skipSignedBy: '--skip-signed-by',
  metricsListen: '--metrics-listen',
} as const;

export const ENV_NAMES = {
  to: 'CACHECTL_TO',
  queue: 'CACHECTL_QUEUE',
  gcRoots: 'CACHECTL_GC_ROOTS',
  secretKeyFiles: 'CACHECTL_SECRET_KEY_FILES',
  jobs: 'CACHECTL_JOBS',
  compression: 'CACHECTL_COMPRESSION',
  skipSignedBy: 'CACHECTL_SKIP_SIGNED_BY',
  metricsListen: 'CACHECTL_METRICS_LISTEN',
  config: 'CACHECTL_CONFIG',
} as const;

/** The cache, for the commands that talk to one: it has no default. */
export function requiredCacheUrl(config: Config): CacheUrl {
  if (config.cacheUrl === undefined) {
    throw new CachectlError('CONFIG_INVALID', 'no cache given: pass --to URL or set CACHECTL_TO');
  }
  return config.cacheUrl;
}

export const DEFAULT_QUEUE = '/var/lib/cachectl/queue.db';
export const DEFAULT_JOBS = 8;
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
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) fileValues = parsed as Record<string, unknown>;
      else problems.push(`config file ${file.name} holds ${Array.isArray(parsed) ? 'a list' : JSON.stringify(parsed)}; ${expected}`);
    } catch (err) {
      problems.push(`config file ${file.name} is not valid JSON (${(err as Error).message}); ${expected}`);
    }
    for (const key of Object.keys(fileValues)) {
      if (!(key in CONFIG_KEYS)) {
        problems.push(`config file ${file.name} has the unknown key ${JSON.stringify(key)} (known: ${Object.keys(CONFIG_KEYS).join(', ')})`);
      }
    }
  }
  const fromFile = (key: keyof typeof CONFIG_KEYS, kind: 'string' | 'number' | 'string[]'): string | string[] | undefined => {
    const value = fileValues[key];
    if (value === undefined) return undefined;
    const ok =
      kind === 'string[]'
        ? Array.isArray(value) && value.every((v) => typeof v === 'string')
        : typeof value === kind;
    if (!ok) {
      problems.push(`config file ${file?.name ?? ''}: key ${key} must be ${kind === 'string[]' ? 'a list of strings' : `a ${kind}`}`);
      return undefined;
    }
    return Array.isArray(value) ? (value as string[]) : String(value);
  };
  const pick = (flag: string | undefined, envName: string, key: keyof typeof CONFIG_KEYS, kind: 'string' | 'number') =>
    flag ?? nonEmpty(env[envName]) ?? (fromFile(key, kind) as string | undefined);

  const toText = pick(flags.to, ENV_NAMES.to, 'to', 'string');
  let cacheUrl: CacheUrl | undefined;
  if (toText !== undefined) {
    try {
      cacheUrl = parseCacheUrl(toText);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }

  const compressionText = pick(flags.compression, ENV_NAMES.compression, 'compression', 'string') ?? 'zstd';
  if (!(COMPRESSIONS as readonly string[]).includes(compressionText)) {
    problems.push(`unknown compression ${JSON.stringify(compressionText)}; use one of ${COMPRESSIONS.join(', ')}`);
  }

  const jobsText = pick(flags.jobs, ENV_NAMES.jobs, 'jobs', 'number') ?? String(DEFAULT_JOBS);
  const jobs = Number(jobsText);
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_JOBS) {
    problems.push(`jobs ${JSON.stringify(jobsText)} must be a whole number from 1 to ${MAX_JOBS}`);
  }

  const keyFiles =
    flags.secretKeyFile ??
    nonEmpty(env[ENV_NAMES.secretKeyFiles])?.split(':').filter((f) => f !== '') ??
    (fromFile('secretKeyFiles', 'string[]') as string[] | undefined) ??
    [];

  const skipSignedBy =
    flags.skipSignedBy ??
    nonEmpty(env[ENV_NAMES.skipSignedBy])?.split(/\s+/).filter((name) => name !== '') ??
    (fromFile('skipSignedBy', 'string[]') as string[] | undefined) ??
    [];
  for (const name of skipSignedBy) {
    if (!KEY_NAME.test(name)) problems.push(`skip-signed-by ${JSON.stringify(name)} is not a key name such as cache.nixos.org-1 (the part before ':' of a public key)`);
  }

  const listenText = pick(flags.metricsListen, ENV_NAMES.metricsListen, 'metricsListen', 'string');
  let metricsListen: ListenAddress | undefined;
  if (listenText !== undefined) {
    metricsListen = parseListenAddress(listenText);
    if (metricsListen === undefined) {
      problems.push(`metrics-listen ${JSON.stringify(listenText)} must be PORT, HOST:PORT or [IPV6]:PORT, such as 127.0.0.1:9108`);
    }
  }

  if (problems.length > 0) {
    throw new CachectlError('CONFIG_INVALID', problems.join('\n'));
  }
  const nixStateDir = nonEmpty(env['NIX_STATE_DIR']) ?? '/nix/var/nix';
  return Object.freeze({
    cacheUrl,
    queue: pick(flags.queue, ENV_NAMES.queue, 'queue', 'string') ?? DEFAULT_QUEUE,
    gcRoots: pick(flags.gcRoots, ENV_NAMES.gcRoots, 'gcRoots', 'string') ?? `${nixStateDir}/gcroots/cachectl`,
    nixDb: `${nixStateDir}/db/db.sqlite`,
    secretKeyFiles: Object.freeze([...keyFiles]),
    jobs,
    compression: compressionText as Compression,
    skipSignedBy: Object.freeze([...skipSignedBy]),
    metricsListen,
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
