import { setMaxListeners } from 'node:events';
import { whenAborted } from '../core/abort.js';
import { NIX32_ALPHABET } from '../core/nix32.js';

/** One object of the bucket, as a listing reports it. */
export interface ObjectEntry {
  key: string;
  sizeBytes: number;
  lastModified: Date;
  /** changes whenever the content may have: S3's ETag, or size, mtime and inode of a file */
  etag: string;
}

/**
 * Refuses a key (or list prefix) that could reach outside the cache: an absolute one, or one with an empty, `.`
 * or `..` segment. Keys derive only from validated hashes and names, so this never fires; it is the last line
 * between a bug and another prefix of the bucket, or a file outside a file:// cache's directory.
 */
export function containedKey(key: string): string {
  if (/(^|\/)\.{0,2}\/|(^|\/)\.{1,2}$|\\|\0/.test(key))
    throw new Error(`refusing cache key ${JSON.stringify(key)}: it could reach outside the cache`);
  return key;
}

/**
 * The signal a backend's requests stop on: the caller's, or one that never aborts. Every request in flight
 * listens to it, so it may have many listeners.
 */
export function requestSignal(signal: AbortSignal | undefined): AbortSignal {
  const chosen = signal ?? new AbortController().signal;
  setMaxListeners(0, chosen);
  return chosen;
}

/**
 * `body`, ending with the signal's reason as soon as it aborts, even while a chunk is awaited (a stalled body
 * would hold an upload forever otherwise).
 */
export async function* untilAborted(body: AsyncIterable<Buffer>, signal: AbortSignal): AsyncGenerator<Buffer> {
  const iterator = body[Symbol.asyncIterator]();
  const { aborted, dispose } = whenAborted(signal);
  try {
    for (;;) {
      // Checked each time too: a body whose chunks are ready at once would win every race.
      signal.throwIfAborted();
      const next = await Promise.race([iterator.next(), aborted]);
      if (next.done === true) return;
      yield next.value;
    }
  } finally {
    dispose();
    // Not awaited: a stalled body may never answer.
    void iterator.return?.().catch(() => undefined);
  }
}

/** The most keys one `delete` takes (S3's DeleteObjects limit). */
export const DELETE_BATCH_KEYS = 1000;

/**
 * The bucket: the same layout (section 4 of DESIGN.md) for `s3://` and `file://`. Keys are relative to the
 * cache root (an s3 `prefix` is the backend's business). A write is all or nothing: a reader never sees a
 * partial object, and a failed `putStream` leaves no object behind.
 */
export interface CacheBackend {
  /** the cache URL without credentials, for messages */
  readonly displayUrl: string;
  get(key: string): Promise<Buffer | undefined>;
  exists(key: string): Promise<boolean>;
  put(key: string, body: Buffer, contentType: string): Promise<void>;
  /** Streams `body` to `key`; `sizeHintBytes` bounds the size, for choosing multipart part sizes. */
  putStream(key: string, body: AsyncIterable<Buffer>, contentType: string, sizeHintBytes: number): Promise<void>;
  /**
   * Whether a listing split into key ranges may run them at once (an S3 endpoint far away answers each page
   * after a round trip; a directory is read whole on every call, so file:// says no).
   */
  readonly listsInParallel: boolean;
  /** Keys directly under `prefix` (one level, like a directory), in byte order, a page at a time. */
  list(prefix: string, options?: { startAfter?: string }): AsyncIterable<ObjectEntry[]>;
  /**
   * Deletes up to DELETE_BATCH_KEYS keys (missing ones are no error). `timeoutMs` bounds the whole request:
   * the GC relies on a delete taking effect within a known time of the checks that allowed it.
   */
  delete(keys: readonly string[], options?: { timeoutMs?: number }): Promise<void>;
  close(): void;
}

export const CONTENT_TYPES = {
  narinfo: 'text/x-nix-narinfo',
  nar: 'application/x-nix-nar',
  cacheInfo: 'text/x-nix-cache-info',
  log: 'text/plain; charset=utf-8',
  listing: 'application/json',
  realisation: 'application/json',
} as const;

/**
 * Where a listing is split: before each character of the nix32 alphabet, in which the keys of narinfos, NARs,
 * listings and logs begin. 33 ranges, each listed on its own, so that a bucket of 100k narinfos takes a few
 * round trips rather than a hundred one after another.
 */
const RANGE_STARTS = Array.from(NIX32_ALPHABET);

/**
 * Calls `onPage` with every key directly under `prefix`, a page at a time: in byte order on a backend that
 * does not list in parallel, else as the ranges' pages come (each range in order).
 */
export async function listEach(
  backend: CacheBackend,
  prefix: string,
  onPage: (page: ObjectEntry[]) => void,
): Promise<void> {
  if (!backend.listsInParallel) {
    for await (const page of backend.list(prefix)) onPage(page);
    return;
  }
  const bounds = [undefined, ...RANGE_STARTS.map((start) => `${prefix}${start}`), undefined];
  await Promise.all(
    bounds.slice(0, -1).map(async (from, i) => {
      const to = bounds[i + 1];
      const startAfter = from === undefined ? undefined : justBefore(from);
      for await (const page of backend.list(prefix, startAfter === undefined ? {} : { startAfter })) {
        const inRange = page.filter(
          (entry) => (from === undefined || entry.key >= from) && (to === undefined || entry.key < to),
        );
        if (inRange.length > 0) onPage(inRange);
        if (to !== undefined && page.some((entry) => entry.key >= to)) return;
      }
    }),
  );
}

/**
 * A key below `bound` and above nearly every key below it: the character before its last, then U+10FFFF. Before
 * `0` comes `/`, which no key has there (a segment is never empty), so `.` stands in for it.
 */
function justBefore(bound: string): string {
  const previous = String.fromCharCode(bound.charCodeAt(bound.length - 1) - 1);
  return `${bound.slice(0, -1)}${previous === '/' ? '.' : previous}\u{10ffff}`;
}

/** Every key directly under `prefix` (see listEach). */
export async function listAll(backend: CacheBackend, prefix: string): Promise<ObjectEntry[]> {
  const entries: ObjectEntry[] = [];
  await listEach(backend, prefix, (page) => entries.push(...page));
  return entries;
}
