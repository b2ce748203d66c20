import { setMaxListeners } from 'node:events';
import { whenAborted } from '../core/abort.js';
import { NIX32_ALPHABET } from '../core/nix32.js';
import type { ObjectKind } from '../core/object-headers.js';
import { firstDigitValues } from './layout.js';

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

/** A put's options: see CacheBackend.put. */
export interface PutOptions {
  after?: Promise<unknown>;
  sha256?: Buffer;
}

/**
 * The bucket: the same layout (section 4 of DESIGN.md) for `s3://` and `file://`. Keys are relative to the
 * cache root (an s3 `prefix` is the backend's business). A write is all or nothing: a reader never sees a
 * partial object, and a failed `putStream` leaves no object behind.
 */
export interface CacheBackend {
  /** the cache URL without credentials, for messages */
  readonly displayUrl: string;
  get(key: string): Promise<Buffer | undefined>;
  /** Reads an object as a stream of chunks (a NAR, never whole in memory), or undefined when it is missing. */
  getStream(key: string): Promise<AsyncIterable<Buffer> | undefined>;
  exists(key: string): Promise<boolean>;
  /**
   * Reads many small objects at once, in order, undefined for a missing one: file:// reads them in worker threads.
   * Absent where a `get` per key, many at once, is the way (S3).
   */
  getMany?(keys: readonly string[]): Promise<(Buffer | undefined)[]>;
  /**
   * Writes `body` to `key`, with the headers of its `kind` (S3; a directory has none). With `after`, the object
   * appears only once `after` resolves, and not at all if it rejects (the put then rejects with its reason):
   * file:// writes meanwhile, an S3 PUT waits to be sent. `sha256` is the body's, where the caller has it: S3
   * signs with it rather than hash the body again. The object can be read once the put resolves; it survives a
   * power loss once a `flush` called after that resolves.
   */
  put(key: string, body: Buffer, kind: ObjectKind, options?: PutOptions): Promise<void>;
  /** Streams `body` to `key`; `sizeHintBytes` bounds the size, for choosing multipart part sizes. */
  putStream(key: string, body: AsyncIterable<Buffer>, kind: ObjectKind, sizeHintBytes: number): Promise<void>;
  /**
   * Whether `putStream` is done with each chunk of its body once it asks for the second chunk after it, so that the
   * body may write over it then: file:// writes one chunk while the next is made. S3 keeps chunks to gather parts.
   */
  readonly releasesStreamChunks: boolean;
  /**
   * Whether a listing is answered a page of 1,000 keys at a time, one request each (S3): then a listing split into
   * key ranges may run them at once (a far-away endpoint answers each page after a round trip), and listing from a
   * key on reads only the pages asked for. A directory is read whole on every call, so file:// says no: it lists in
   * order, and finds which paths it has with a stat each.
   */
  readonly listsByPage: boolean;
  /**
   * Resolves once everything written before the call survives a power loss. S3 has once it answered; a file://
   * cache flushes its file system (none with `?fsync=false`). A file it renamed after another reaches the disk
   * after it (as journaling file systems commit renames in order), and each file is flushed before its rename: a
   * narinfo, renamed after its NAR's and its references', is never on disk without them.
   */
  flush(): Promise<void>;
  /**
   * Keys directly under `prefix` (one level, like a directory), or with `deep` at any depth below it, in byte
   * order, a page at a time.
   */
  list(prefix: string, options?: { startAfter?: string; deep?: boolean }): AsyncIterable<ObjectEntry[]>;
  /**
   * Deletes up to DELETE_BATCH_KEYS keys (missing ones are no error). `timeoutMs` bounds the whole request:
   * the GC relies on a delete taking effect within a known time of the checks that allowed it.
   */
  delete(keys: readonly string[], options?: { timeoutMs?: number }): Promise<void>;
  /** Ends what the backend holds open, and waits for what it started: under systemd nothing may outlive the daemon. */
  close(): Promise<void>;
}

/** Ranges of a listing listed at once at most, and the pages each should have for a split to pay. */
const MAX_RANGES = 32;
const PAGES_PER_RANGE = 3;

/**
 * Calls `onPage` with every key directly under `prefix`, a page at a time. A backend that lists by page,
 * when the first page shows that many pages follow, lists the rest in key ranges at once (each range in
 * order), so that 100k narinfos far away take a few round trips rather than a hundred one after another.
 */
export async function listEach(
  backend: CacheBackend,
  prefix: string,
  onPage: (page: ObjectEntry[]) => void,
): Promise<void> {
  const pages = backend.list(prefix)[Symbol.asyncIterator]();
  const first = await pages.next();
  if (first.done === true) return;
  onPage(first.value);
  const last = first.value.at(-1)?.key;
  const ranges = backend.listsByPage && last !== undefined ? listRanges(prefix, last) : [];
  if (ranges.length === 0) {
    for (let next = await pages.next(); next.done !== true; next = await pages.next()) onPage(next.value);
    return;
  }
  await pages.return?.();
  await Promise.all(
    ranges.map(async ({ startAfter, from, to }) => {
      for await (const page of backend.list(prefix, { startAfter })) {
        const inRange = page.filter(
          (entry) => entry.key > startAfter && entry.key >= from && (to === undefined || entry.key < to),
        );
        if (inRange.length > 0) onPage(inRange);
        if (to !== undefined && page.some((entry) => entry.key >= to)) return;
      }
    }),
  );
}

/**
 * How to list what follows `last`, the last key of a listing's first page, in ranges (the keys from `from` up
 * to `to`, listed after `startAfter`), or none when too few pages follow to pay for a request per range. Keys
 * of narinfos, NARs and listings begin with nix32 hashes, evenly spread: how far into the two-digit cells of
 * nix32 the first page reached tells how many pages follow (1,024 cells, or 64 for NARs, whose first digit is 0
 * or 1).
 */
export function listRanges(prefix: string, last: string): { startAfter: string; from: string; to?: string }[] {
  const cells = firstDigitValues(prefix) * 32;
  const cell = (at: number, top: number) => {
    const char = last.charAt(prefix.length + at);
    const digit = NIX32_ALPHABET.indexOf(char);
    return Math.min(top, digit >= 0 ? digit : char < '0' ? 0 : 31);
  };
  const reached = cell(0, cells / 32 - 1) * 32 + cell(1, 31) + 1;
  const count = Math.min(MAX_RANGES, Math.floor((cells / reached - 1) / PAGES_PER_RANGE), cells - reached);
  if (count < 2) return [];
  const bounds = Array.from({ length: count - 1 }, (_, j) => {
    const at = reached + Math.round(((j + 1) * (cells - reached)) / count);
    return `${prefix}${NIX32_ALPHABET.charAt(at >> 5)}${NIX32_ALPHABET.charAt(at & 31)}`;
  });
  return Array.from({ length: count }, (_, j) => {
    const from = j === 0 ? last : (bounds[j - 1] as string);
    const to = bounds[j];
    return { startAfter: j === 0 ? last : justBefore(from), from, ...(to === undefined ? {} : { to }) };
  });
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

/** Every key below `prefix`, at any depth (`build-trace-v2/<drv>/<output>.doi`: few, so listed one page at a time). */
export async function listDeep(backend: CacheBackend, prefix: string): Promise<ObjectEntry[]> {
  const entries: ObjectEntry[] = [];
  for await (const page of backend.list(prefix, { deep: true })) entries.push(...page);
  return entries;
}
