import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { CachectlError } from '../core/errors.js';
import {
  NAR_CLOSE,
  NAR_DIRECTORY_OPEN,
  NAR_ENTRY_CLOSE,
  NAR_MAGIC,
  narEntryOpen,
  narRegularHeader,
  narRegularTrailer,
  narSymlink,
} from '../core/nar.js';
import type { NarListing } from '../core/nar-listing.js';

const SLASH = Buffer.from('/');
/** Small pieces are gathered up to this size, so hashing and compression see few large chunks. */
const CHUNK_BYTES = 1024 * 1024;
/** Files up to this size are read whole; larger ones in pieces of this size. */
const READ_BYTES = 1024 * 1024;

/** Gathers small buffers into chunks of at least CHUNK_BYTES, counting every byte of the NAR. */
class Gather {
  /** bytes of the NAR so far, gathered or passed by */
  offset = 0;
  private parts: Buffer[] = [];
  private size = 0;

  add(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.parts.push(bytes);
    this.size += bytes.length;
    this.offset += bytes.length;
  }

  /** Counts a piece that goes out on its own, after what was gathered. */
  passBy(bytes: Buffer): void {
    this.offset += bytes.length;
  }

  get full(): boolean {
    return this.size >= CHUNK_BYTES;
  }

  take(): Buffer | undefined {
    if (this.size === 0) return undefined;
    const chunk = this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    return chunk;
  }
}

/**
 * Serializes the file system object at `path` as a NAR, byte for byte what `nix-store --dump` writes,
 * streamed in chunks (never the whole NAR in memory). Names are handled as bytes, so any encoding works.
 *
 * The file system calls are synchronous on purpose: measured on a 300 MB closure of real files, promise
 * based reads took 1.1-1.4 s against 0.2 s for the same reads done synchronously (each async call is a
 * thread-pool round trip). The generator yields every CHUNK_BYTES, so the event loop is held only for as long
 * as it takes to read one chunk's worth of files.
 *
 * With `listing`, the NAR's listing is written into it on the way (nothing is read twice).
 */
export async function* dumpNar(path: string, listing?: NarListing): AsyncGenerator<Buffer> {
  const out = new Gather();
  out.add(NAR_MAGIC);
  yield* dumpNode(Buffer.from(path), lstatOrFail(Buffer.from(path)), out, listing);
  const rest = out.take();
  if (rest !== undefined) yield rest;
}

function lstatOrFail(path: Buffer): Stats {
  return attempt(path, () => lstatSync(path));
}

function attempt<T>(path: Buffer, call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw unreadable(path, err);
  }
}

function unreadable(path: Buffer, err: unknown): CachectlError {
  return new CachectlError('NAR_UNREADABLE', `cannot read ${path.toString()}: ${(err as Error).message}`, {
    cause: err,
  });
}

async function* dumpNode(
  path: Buffer,
  stats: Stats,
  out: Gather,
  listing: NarListing | undefined,
): AsyncGenerator<Buffer> {
  if (stats.isSymbolicLink()) {
    const target = attempt(path, () => readlinkSync(path, { encoding: 'buffer' }));
    out.add(narSymlink(target));
    listing?.symlink(target);
  } else if (stats.isFile()) {
    yield* dumpRegular(path, stats, out, listing);
  } else if (stats.isDirectory()) {
    out.add(NAR_DIRECTORY_OPEN);
    listing?.openDirectory();
    const names = attempt(path, () => readdirSync(path, { encoding: 'buffer' }));
    names.sort((a, b) => Buffer.compare(a, b));
    for (const name of names) {
      const child = Buffer.concat([path, SLASH, name]);
      out.add(narEntryOpen(name));
      listing?.entry(name);
      yield* dumpNode(child, lstatOrFail(child), out, listing);
      out.add(NAR_ENTRY_CLOSE);
      if (out.full) yield out.take() as Buffer;
    }
    out.add(NAR_CLOSE);
    listing?.closeDirectory();
  } else {
    throw new CachectlError(
      'NAR_UNREADABLE',
      `${path.toString()} is neither a regular file, a directory nor a symlink; a NAR cannot hold it`,
    );
  }
  if (out.full) yield out.take() as Buffer;
}

async function* dumpRegular(
  path: Buffer,
  stats: Stats,
  out: Gather,
  listing: NarListing | undefined,
): AsyncGenerator<Buffer> {
  const size = stats.size;
  const executable = (stats.mode & 0o100) !== 0;
  out.add(narRegularHeader(executable, size));
  listing?.regular(size, executable, out.offset);
  const fd = attempt(path, () => openSync(path, 'r'));
  try {
    let offset = 0;
    while (offset < size) {
      const want = Math.min(READ_BYTES, size - offset);
      const buffer = Buffer.allocUnsafe(want);
      const bytesRead = attempt(path, () => readSync(fd, buffer, 0, want, offset));
      if (bytesRead === 0) break;
      offset += bytesRead;
      const piece = bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
      if (piece.length >= CHUNK_BYTES) {
        // A large piece goes out on its own rather than being copied into a gathered chunk.
        const before = out.take();
        if (before !== undefined) yield before;
        out.passBy(piece);
        yield piece;
      } else {
        out.add(piece);
        if (out.full) yield out.take() as Buffer;
      }
    }
    // Fewer bytes than lstat said: the file shrank under us. (Bytes appended past `size` are not part of the
    // NAR, whose header was already written; the NarHash check decides whether what was read is right.)
    if (offset !== size) {
      throw new CachectlError('NAR_UNREADABLE', `${path.toString()} changed size while it was being read`);
    }
  } finally {
    closeSync(fd);
  }
  out.add(narRegularTrailer(size));
}
