import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  rename as renameCallback,
  rmSync,
  statSync,
  writeFile as writeFileCallback,
} from 'node:fs';
import { open, readdir, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { basename, dirname, join } from 'node:path';
import { CachectlError } from '../core/errors.js';
import type { ObjectKind } from '../core/object-headers.js';
import { FileReaderPool, FileReadError } from './file-reader.js';
import {
  containedKey,
  requestSignal,
  untilAborted,
  type CacheBackend,
  type ObjectEntry,
  type PutOptions,
} from './backend.js';

const LIST_PAGE = 1000;
/** Chunks of a streamed read: fewer trips through the thread pool than Node's 64 KiB. */
const READ_CHUNK_BYTES = 1024 * 1024;
// The callback forms: fs/promises takes two to three times as long a call, which a chain of narinfos each
// written after the one before feels.
const writeFile = promisify(writeFileCallback);
const rename = promisify(renameCallback);
/** Prefix of files still being written; never a key of the layout, so readers and listings skip them. */
export const TEMP_PREFIX = '.cachectl-tmp-';

/** A cache in a local directory (`file:///DIR`), written with temp file + rename so readers see whole files. */
export class FileBackend implements CacheBackend {
  readonly displayUrl: string;
  readonly listsByPage: boolean = false;
  readonly releasesStreamChunks: boolean = true;
  /** directories known to exist, so that a thousand small writes do not each ask */
  private readonly directories = new Set<string>();
  private writes = 0;
  private readonly readers = new FileReaderPool();

  private readonly signal: AbortSignal;

  /** undefined: nothing is flushed (`?fsync=false`) */
  private readonly flushes: DirectoryFlushes | undefined;

  constructor(
    private readonly root: string,
    signal?: AbortSignal,
    options: { fsync?: boolean } = {},
  ) {
    this.displayUrl = `file://${root}`;
    this.signal = requestSignal(signal);
    this.flushes = options.fsync === false ? undefined : new DirectoryFlushes();
  }

  private path(key: string): string {
    return join(this.root, containedKey(key));
  }

  /**
   * Read synchronously, after a turn of the event loop: what is read whole is small (narinfos, pins, leases, the
   * GC's marks), and an async read costs four trips through the thread pool, which made a GC reading a million
   * narinfos twice as slow.
   */
  async get(key: string): Promise<Buffer | undefined> {
    await new Promise(setImmediate);
    try {
      return readFileSync(this.path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.failure(key, err);
    }
  }

  async getStream(key: string): Promise<AsyncIterable<Buffer> | undefined> {
    let file;
    try {
      file = await open(this.path(key), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.failure(key, err);
    }
    return file.createReadStream({ highWaterMark: READ_CHUNK_BYTES });
  }

  async getMany(keys: readonly string[]): Promise<(Buffer | undefined)[]> {
    try {
      return await this.readers.read(keys.map((key) => this.path(key)));
    } catch (err) {
      if (err instanceof FileReadError) throw this.failure(keys[err.index] as string, err);
      throw err;
    }
  }

  /** A stat on the main thread, as `get` reads: the pool's round trip cost 14 µs of CPU a path (bench/push chain). */
  async exists(key: string): Promise<boolean> {
    try {
      return statSync(this.path(key), { throwIfNoEntry: false })?.isFile() ?? false;
    } catch (err) {
      throw this.failure(key, err);
    }
  }

  /** With `after`, the file is written at once and renamed into place once `after` resolves. */
  async put(key: string, body: Buffer, _kind?: ObjectKind, options: PutOptions = {}): Promise<void> {
    await this.writeAtomically(
      key,
      async (temp) => {
        if (this.flushes === undefined) return writeFile(temp, body);
        const file = await open(temp, 'w');
        try {
          await file.writeFile(body);
          await file.datasync();
        } finally {
          await file.close();
        }
      },
      options.after,
    );
  }

  async putStream(key: string, body: AsyncIterable<Buffer>): Promise<void> {
    await this.writeAtomically(key, async (temp) => {
      const file = await open(temp, 'w');
      // One write in flight while the next chunk is made: the one before it is written by then (releasesStreamChunks).
      let writing: Promise<unknown> = Promise.resolve();
      try {
        for await (const chunk of untilAborted(body, this.signal)) {
          await writing;
          writing = file.write(chunk);
          writing.catch(() => undefined); // its failure is seen when awaited, not as an unhandled rejection
        }
        await writing;
        if (this.flushes !== undefined) await file.datasync();
      } finally {
        await writing.catch(() => undefined);
        await file.close();
      }
    });
  }

  async *list(prefix: string, options: { startAfter?: string; deep?: boolean } = {}): AsyncIterable<ObjectEntry[]> {
    let names: string[];
    try {
      // deep: the paths of everything below, directories too (skipped below, as they are not files)
      names = await readdir(this.path(prefix), { recursive: options.deep === true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw this.failure(prefix, err);
    }
    // Sorted in place, and keys made a page at a time: a directory may hold a million names.
    names.sort();
    const after = options.startAfter ?? '';
    // Every key starts with `prefix`: one after it that does not start so is after all of them or none.
    let next = after.startsWith(prefix)
      ? firstAfter(names, after.slice(prefix.length))
      : after < prefix
        ? 0
        : names.length;
    while (next < names.length) {
      const page: ObjectEntry[] = [];
      for (; next < names.length && page.length < LIST_PAGE; next += 1) {
        const name = names[next] as string;
        if (basename(name).startsWith(TEMP_PREFIX)) continue;
        // statSync, a page at a time between yields: a million async stats cost three times as long, and their
        // promises outlive the young generation, so the heap grew by hundreds of MB.
        const key = `${prefix}${name}`;
        const info = statSync(this.path(key), { throwIfNoEntry: false });
        if (info?.isFile() === true)
          page.push({
            key,
            sizeBytes: info.size,
            lastModified: info.mtime,
            etag: `${info.size}-${info.mtimeMs}-${info.ino}`,
          });
      }
      if (page.length > 0) yield page;
      await new Promise(setImmediate);
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    await Promise.all(
      keys.map(async (key) => {
        try {
          await unlink(this.path(key));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.failure(key, err, true);
        }
      }),
    );
  }

  close(): void {
    this.readers.close();
  }

  /**
   * Whether the cache directory, or the nearest directory above it that exists, may be written by this process
   * (mkdir on a read-only file system may say ENOENT rather than EROFS).
   */
  private writable(): boolean {
    let dir = this.root;
    while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
    try {
      accessSync(dir, constants.W_OK);
      return true;
    } catch {
      return false;
    }
  }

  /** `write`s a temp file, and renames it into place once `after` (if any) resolves; removes it if not. */
  private async writeAtomically(
    key: string,
    write: (temp: string) => Promise<void>,
    after?: Promise<unknown>,
  ): Promise<void> {
    const target = this.path(key);
    const temp = join(dirname(target), `${TEMP_PREFIX}${process.pid}-${(this.writes += 1)}`);
    try {
      if (!this.directories.has(dirname(target))) {
        const made = mkdirSync(dirname(target), { recursive: true });
        // A directory made here is on disk before anything in it counts as written.
        if (made !== undefined)
          for (let dir = dirname(target); dir !== dirname(made); dir = dirname(dir))
            await this.flushes?.flush(dirname(dir));
        this.directories.add(dirname(target));
      }
      await write(temp);
    } catch (err) {
      rmSync(temp, { force: true });
      throw err instanceof CachectlError ? err : this.failure(key, err, true);
    }
    try {
      await after;
    } catch (err) {
      // not the cache's failure: passed on as it is
      rmSync(temp, { force: true });
      throw err;
    }
    try {
      // An abandoned write is not published, even when it was complete.
      this.signal.throwIfAborted();
      await rename(temp, target);
      // The rename is on disk before the write resolves: a narinfo renamed after it finds its NAR after a crash.
      await this.flushes?.flush(dirname(target));
    } catch (err) {
      rmSync(temp, { force: true });
      throw err instanceof CachectlError ? err : this.failure(key, err, true);
    }
  }

  private failure(key: string, err: unknown, writing = false): CachectlError {
    if (writing && !this.writable()) {
      // Most often the service's sandbox: ProtectSystem=strict leaves only named paths writable.
      return new CachectlError(
        'CACHE_WRITE_FAILED',
        `cache ${this.displayUrl} is not writable here (${key}: ${(err as Error).message}); under ` +
          `systemd/cachectl.service, a file:// cache outside /var/lib/cachectl must exist and be named in a ` +
          `drop-in: ReadWritePaths=${this.root} (docs/operating.md: Quick start on Debian)`,
        { cause: err },
      );
    }
    return new CachectlError('CACHE_WRITE_FAILED', `cache ${this.displayUrl}: ${key}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * fsyncs of directories, shared: a flush asked for while one of the same directory runs waits for the next one,
 * which starts once the running one ends and serves everyone who asked meanwhile. A thousand renames in parallel
 * into `nar/` cost a few flushes, not a thousand.
 */
class DirectoryFlushes {
  private readonly running = new Map<string, Promise<void>>();
  private readonly next = new Map<string, Promise<void>>();

  flush(dir: string): Promise<void> {
    const waiting = this.next.get(dir);
    if (waiting !== undefined) return waiting;
    const running = this.running.get(dir);
    const start = async (): Promise<void> => {
      this.next.delete(dir);
      const flushing = flushDirectory(dir);
      this.running.set(dir, flushing);
      try {
        await flushing;
      } finally {
        if (this.running.get(dir) === flushing) this.running.delete(dir);
      }
    };
    // After the running flush, which may have begun before the caller's rename.
    const flush = running === undefined ? start() : running.catch(() => undefined).then(start);
    if (running !== undefined) this.next.set(dir, flush);
    return flush;
  }
}

async function flushDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The index of the first of the sorted `names` after `name`. */
function firstAfter(names: readonly string[], name: string): number {
  let low = 0;
  let high = names.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if ((names[middle] as string) <= name) low = middle + 1;
    else high = middle;
  }
  return low;
}
