import { spawn, type ChildProcessByStdio } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFile as writeFileCallback,
  writeFileSync,
} from 'node:fs';
import { open, readdir, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { basename, dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
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
/**
 * Bodies up to this size are written on the main thread: a trip through the thread pool cost more CPU than the
 * write (bench/push, 1000 tiny paths: half the CPU of their file system calls).
 */
const WRITTEN_AT_ONCE_BYTES = 1024 * 1024;
// The callback form: fs/promises takes two to three times as long a call.
const writeFile = promisify(writeFileCallback);
/**
 * What may be renamed into place before a flush: nothing reads a NAR or a listing before a narinfo names it, and
 * a narinfo is renamed only after a flush that began once they were written.
 */
const READ_THROUGH_A_NARINFO: ReadonlySet<ObjectKind> = new Set(['nar', 'listing']);
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
  private readonly flushes: FileSystemFlushes | undefined;

  constructor(
    private readonly root: string,
    signal?: AbortSignal,
    options: { fsync?: boolean } = {},
  ) {
    this.displayUrl = `file://${root}`;
    this.signal = requestSignal(signal);
    this.flushes = options.fsync === false ? undefined : new FileSystemFlushes(root);
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
  async put(key: string, body: Buffer, kind: ObjectKind, options: PutOptions = {}): Promise<void> {
    await this.writeAtomically(
      key,
      kind,
      async (temp) => {
        if (body.length <= WRITTEN_AT_ONCE_BYTES) writeFileSync(temp, body);
        else await writeFile(temp, body);
      },
      options.after,
    );
  }

  async putStream(key: string, body: AsyncIterable<Buffer>, kind: ObjectKind): Promise<void> {
    await this.writeAtomically(key, kind, async (temp) => {
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
      } finally {
        await writing.catch(() => undefined);
        await file.close();
      }
    });
  }

  /** One syncfs for everything written since the last: see CacheBackend.flush. */
  async flush(): Promise<void> {
    await this.flushes?.flush();
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

  async close(): Promise<void> {
    this.readers.close();
    await this.flushes?.close();
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

  /**
   * `write`s a temp file, and renames it into place once `after` (if any) resolves; removes it if not. Unless it
   * is read only through a narinfo, the temp file is flushed first: a file renamed after a power loss is whole.
   */
  private async writeAtomically(
    key: string,
    kind: ObjectKind,
    write: (temp: string) => Promise<void>,
    after?: Promise<unknown>,
  ): Promise<void> {
    const target = this.path(key);
    const temp = join(dirname(target), `${TEMP_PREFIX}${process.pid}-${(this.writes += 1)}`);
    try {
      if (!this.directories.has(dirname(target))) {
        mkdirSync(dirname(target), { recursive: true });
        this.directories.add(dirname(target));
      }
      await write(temp);
      if (!READ_THROUGH_A_NARINFO.has(kind)) await this.flushes?.flush();
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
      renameSync(temp, target);
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
 * syncfs(2) of the cache's file system, shared: a flush asked for while one runs waits for the next one, which
 * starts once the running one ends and serves everyone who asked meanwhile. A thousand paths cost a few flushes,
 * not the three fdatasyncs and two directory fsyncs each that a journaling file system commits one by one.
 */
class FileSystemFlushes {
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  private readonly syncfs: SyncfsProcess;

  constructor(dir: string) {
    this.syncfs = new SyncfsProcess(dir);
  }

  flush(): Promise<void> {
    if (this.next !== undefined) return this.next;
    const start = async (): Promise<void> => {
      this.next = undefined;
      const flushing = this.syncfs.run();
      this.running = flushing;
      try {
        await flushing;
      } finally {
        if (this.running === flushing) this.running = undefined;
      }
    };
    // After the running flush, which may have begun before the caller's write.
    if (this.running === undefined) return start();
    this.next = this.running.catch(() => undefined).then(start);
    return this.next;
  }

  close(): Promise<void> {
    return this.syncfs.close();
  }
}

type SyncfsShell = ChildProcessByStdio<Writable, Readable, null>;

/** Reads a line for each flush, answers `ok` or why it failed. */
const SYNCFS_LOOP = `while read -r _; do
  if out=$(sync -f "$1" 2>&1); then echo ok; else echo "$out" | tr '\\n' ' '; echo; fi
done`;

/**
 * syncfs(2) of the file system holding `dir`, run by one long-lived shell with coreutils' `sync -f` for each line
 * it reads: Node has no syncfs, and a process spawned from this one for each flush cost the daemon a sixth of its
 * time (bench/flood under node --cpu-prof: ChildProcess.spawn 391 ms of 2.6 s), as each fork copies its memory map.
 */
class SyncfsProcess {
  private shell: SyncfsShell | undefined;
  private readonly waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private output = '';

  constructor(private readonly dir: string) {}

  run(): Promise<void> {
    const shell = (this.shell ??= this.start());
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.hold(shell, true);
      shell.stdin.write('\n');
    });
  }

  /** Ends the shell (its stdin closes) and waits for it to exit. */
  async close(): Promise<void> {
    const shell = this.shell;
    this.shell = undefined;
    if (shell === undefined || shell.exitCode !== null || shell.signalCode !== null) return;
    const exited = new Promise((resolve) => shell.once('exit', resolve));
    this.hold(shell, true);
    shell.stdin.end();
    await exited;
  }

  private start(): SyncfsShell {
    const shell = spawn('/bin/sh', ['-c', SYNCFS_LOOP, 'cachectl-syncfs', this.dir], {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    shell.stdout.setEncoding('utf8');
    shell.stdout.on('data', (text: string) => {
      this.output += text;
      for (let end = this.output.indexOf('\n'); end >= 0; end = this.output.indexOf('\n')) {
        const line = this.output.slice(0, end);
        this.output = this.output.slice(end + 1);
        const waiter = this.waiting.shift();
        if (line === 'ok') waiter?.resolve();
        else waiter?.reject(this.failure(line.trim() || '`sync -f` failed'));
      }
      if (this.waiting.length === 0) this.hold(shell, false);
    });
    const ended = (why: string) => {
      if (this.shell === shell) this.shell = undefined;
      for (const waiter of this.waiting.splice(0)) waiter.reject(this.failure(why));
    };
    shell.on('error', (err) => {
      ended(err.message);
    });
    shell.on('exit', (code, signal) => {
      ended(`its shell exited (${signal ?? `code ${code}`})`);
    });
    shell.stdin.on('error', () => undefined); // a shell gone is seen by its exit
    return shell;
  }

  /** Only a flush waited for keeps the process alive: an idle shell ends with it (its stdin closes). */
  private hold(shell: SyncfsShell, on: boolean): void {
    // its pipes are sockets, which keep the process alive as the child does
    for (const handle of [shell, shell.stdin, shell.stdout] as { ref(): void; unref(): void }[]) {
      if (on) handle.ref();
      else handle.unref();
    }
  }

  private failure(why: string): CachectlError {
    return new CachectlError(
      'CACHE_WRITE_FAILED',
      `could not flush the cache file://${this.dir} to disk with \`sync -f\` (coreutils): ${why}; a scratch ` +
        `cache can go without: file://${this.dir}?fsync=false`,
    );
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
