import { performance } from 'node:perf_hooks';
import { type Config, requiredCacheUrl } from '../core/config.js';
import { CachectlError, errorText } from '../core/errors.js';
import { openCache } from '../cache/open.js';
import { LeaseWriter } from '../gc/lease.js';
import { LocalStore } from '../nix/local-store.js';
import { resolveArguments } from '../nix/resolve.js';
import { openSigner } from '../upload/signer.js';
import { pushClosures, type PushOptions, type PushProgress, type PushResult } from '../upload/push.js';

export interface PushCommandResult extends PushResult {
  cache: string;
  seconds: number;
}

/** `cachectl push PATH…`: uploads the closures of PATHs now, in the foreground. */
export async function pushCommand(
  args: readonly string[],
  config: Config,
  progress: PushProgress,
): Promise<PushCommandResult> {
  const started = Date.now();
  // Everything is checked before the first byte goes out: keys, paths, then the cache itself.
  const push = await openPush(config);
  try {
    const roots = await resolveArguments(args, push.options.store);
    const result = await pushClosures(roots, { ...push.options, progress });
    return { ...result, cache: push.options.backend.displayUrl, seconds: (Date.now() - started) / 1000 };
  } finally {
    await push.close();
  }
}

/** The settings of a push, and what it writes with: its signer, the local store, the cache and a lease on it. */
type OpenedPushOptions = Pick<
  PushOptions,
  'backend' | 'store' | 'compression' | 'narListing' | 'signer' | 'jobs' | 'skipSignedBy' | 'lease'
>;

async function openPush(config: Config): Promise<{ options: OpenedPushOptions; close(): Promise<void> }> {
  const cacheUrl = requiredCacheUrl(config);
  const signer = await openSigner(config);
  const store = new LocalStore({ dbPath: config.nixDb, logDir: config.nixLogDir });
  const backend = await openCache(cacheUrl, { headers: config.objectHeaders });
  const lease = new LeaseWriter(backend);
  const { compression, narListing, jobs, skipSignedBy } = config;
  return {
    options: { backend, store, compression, narListing, signer, jobs, skipSignedBy, lease },
    async close() {
      lease.close();
      store.close();
      signer.close();
      await backend.close();
    },
  };
}

/** What `push --stdin` prints for each path, one JSON line, as soon as it is published or has failed. */
export type StdinPushLine = {
  /** the line read */
  input: string;
  /** the store path it stands for (one line per output of a .drv) */
  path?: string;
  /** the batch it went up in: lines read while one batch runs form the next */
  batch: number;
  /** from the line read to this one written */
  seconds: number;
} & ({ ok: true; state: 'uploaded' | 'present' } | { ok: false; code: string; message: string });

/**
 * `cachectl push --stdin`: store paths one per line, pushed in batches formed as lines arrive (those read while a
 * batch runs go up in the next), a line to `emit` for each path as soon as its closure is whole in the cache or
 * it failed. A line that names no valid path fails alone. Resolves with the count of failures once the input ends
 * and the last batch is done.
 */
export async function pushStdinCommand(
  lines: AsyncIterable<string>,
  config: Config,
  emit: (line: StdinPushLine) => void,
): Promise<{ paths: number; failed: number }> {
  // Reading starts before the first await: readline drops lines nobody listens for.
  const waiting: { input: string; readAt: number }[] = [];
  // Changed by the reader, between the batches' awaits.
  const input: { ended: boolean; wake?: () => void } = { ended: false };
  const reading = (async () => {
    try {
      for await (const line of lines) {
        const text = line.trim();
        if (text === '') continue;
        waiting.push({ input: text, readAt: performance.now() });
        input.wake?.();
      }
    } finally {
      input.ended = true;
      input.wake?.();
    }
  })();
  const counts = { paths: 0, failed: 0 };
  const push = await openPush(config);
  let batch = 0;
  try {
    for (;;) {
      if (waiting.length === 0 && !input.ended) await new Promise<void>((resolve) => (input.wake = resolve));
      // Lines that came in one read are taken in one batch.
      await new Promise(setImmediate);
      if (waiting.length === 0 && input.ended) break;
      batch += 1;
      const out = (line: StdinPushLine) => {
        counts.paths += 1;
        if (!line.ok) counts.failed += 1;
        emit(line);
      };
      await pushBatch(waiting.splice(0), batch, push.options, out);
    }
    await reading;
    return counts;
  } finally {
    await push.close();
  }
}

async function pushBatch(
  inputs: readonly { input: string; readAt: number }[],
  batch: number,
  options: OpenedPushOptions,
  emit: (line: StdinPushLine) => void,
): Promise<void> {
  const { store } = options;
  const seconds = (readAt: number) => Math.round(performance.now() - readAt) / 1000;
  const failure = (err: unknown) => ({
    ok: false as const,
    code: err instanceof CachectlError ? err.code : 'INTERNAL',
    message: errorText(err),
  });
  // Each root with the lines that named it (a path given twice is answered twice).
  const roots = new Map<string, { input: string; readAt: number }[]>();
  for (const item of inputs) {
    try {
      for (const path of await resolveArguments([item.input], store))
        roots.set(path, [...(roots.get(path) ?? []), item]);
    } catch (err) {
      emit({ input: item.input, batch, seconds: seconds(item.readAt), ...failure(err) });
    }
  }
  const valid = store.queryPathInfos([...roots.keys()]);
  const answer = (path: string, outcome: { ok: true; state: 'uploaded' | 'present' } | ReturnType<typeof failure>) => {
    for (const { input, readAt } of roots.get(path) ?? [])
      emit({ input, path, batch, seconds: seconds(readAt), ...outcome });
    roots.delete(path);
  };
  for (const path of [...roots.keys()]) {
    if (!valid.has(path))
      answer(path, failure(new CachectlError('PATH_NOT_VALID', `${path} is not a valid path in the local Nix store`)));
  }
  if (roots.size === 0) return;
  let result;
  try {
    result = await pushClosures([...roots.keys()], {
      ...options,
      onRootPublished: (root) => {
        answer(root, { ok: true, state: 'uploaded' });
      },
    });
  } catch (err) {
    for (const path of [...roots.keys()]) answer(path, failure(err));
    return;
  }
  for (const failed of result.failed) {
    if (roots.has(failed.path)) answer(failed.path, { ok: false, code: failed.code, message: failed.message });
  }
  const uploaded = new Set([...result.uploaded, ...result.repaired]);
  for (const path of [...roots.keys()]) answer(path, { ok: true, state: uploaded.has(path) ? 'uploaded' : 'present' });
}
