import { parseCacheUrl, type CacheUrl } from './cache-url.js';
import { CachectlError } from './errors.js';
import { COMPRESSIONS, type Compression } from './narinfo.js';

/** The options common to all commands, parsed once: flags, then environment, then config file, then defaults. */
export interface Config {
  readonly cacheUrl: CacheUrl | undefined;
  readonly queue: string;
  /** where queued paths are made GC roots of the local store until uploaded */
  readonly gcRoots: string;
  readonly secretKeyFiles: readonly string[];
  readonly jobs: number;
  readonly compression: Compression;
}

/** Flag values as commander hands them over (undefined when not given). */
export interface ConfigFlags {
  to?: string | undefined;
  queue?: string | undefined;
  gcRoots?: string | undefined;
  secretKeyFile?: string[] | undefined;
  jobs?: string | undefined;
  compression?: string | undefined;
}

/** Keys of the JSON config file, each naming its flag. */
export const CONFIG_KEYS = {
  to: '--to',
  queue: '--queue',
  gcRoots: '--gc-roots',
  secretKeyFiles: '--secret-key-file',
  jobs: '--jobs',
  compression: '--compression',
} as const;

export const ENV_NAMES = {
  to: 'CACHECTL_TO',
  queue: 'CACHECTL_QUEUE',
  gcRoots: 'CACHECTL_GC_ROOTS',
  secretKeyFiles: 'CACHECTL_SECRET_KEY_FILES',
  jobs: 'CACHECTL_JOBS',
  compression: 'CACHECTL_COMPRESSION',
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
    try {
      const parsed: unknown = JSON.parse(file.text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
      fileValues = parsed as Record<string, unknown>;
    } catch (err) {
      problems.push(`config file ${file.name} is not a JSON object: ${(err as Error).message}`);
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
      problems.push(`config file key ${key} must be ${kind === 'string[]' ? 'a list of strings' : `a ${kind}`}`);
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

  if (problems.length > 0) {
    throw new CachectlError('CONFIG_INVALID', problems.join('\n'));
  }
  return Object.freeze({
    cacheUrl,
    queue: pick(flags.queue, ENV_NAMES.queue, 'queue', 'string') ?? DEFAULT_QUEUE,
    gcRoots: pick(flags.gcRoots, ENV_NAMES.gcRoots, 'gcRoots', 'string') ?? `${nonEmpty(env['NIX_STATE_DIR']) ?? '/nix/var/nix'}/gcroots/cachectl`,
    secretKeyFiles: Object.freeze([...keyFiles]),
    jobs,
    compression: compressionText as Compression,
  });
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
