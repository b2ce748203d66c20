import { setMaxListeners } from 'node:events';
import { whenAborted } from '../core/abort.js';

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
