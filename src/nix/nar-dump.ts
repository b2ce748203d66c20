import { open, lstat, readdir, readlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
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

const SLASH = Buffer.from('/');
/** Small pieces are gathered up to this size, so hashing and compression see few large chunks. */
const CHUNK_BYTES = 256 * 1024;
/** Files up to this size are read whole; larger ones in pieces of this size. */
const READ_BYTES = 1024 * 1024;

/** Gathers small buffers into chunks of at least CHUNK_BYTES. */
class Gather {
  private parts: Buffer[] = [];
  private size = 0;

  add(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.parts.push(bytes);
    this.size += bytes.length;
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
 */
export async function* dumpNar(path: string): AsyncGenerator<Buffer> {
  const out = new Gather();
  out.add(NAR_MAGIC);
  yield* dumpNode(Buffer.from(path), await lstatOrFail(Buffer.from(path)), out);
  const rest = out.take();
  if (rest !== undefined) yield rest;
}

async function lstatOrFail(path: Buffer): Promise<Stats> {
  try {
    return await lstat(path);
  } catch (err) {
    throw unreadable(path, err);
  }
}

function unreadable(path: Buffer, err: unknown): CachectlError {
  return new CachectlError('NAR_UNREADABLE', `cannot read ${path.toString()}: ${(err as Error).message}`, {
    cause: err,
  });
}

async function* dumpNode(path: Buffer, stats: Stats, out: Gather): AsyncGenerator<Buffer> {
  if (stats.isSymbolicLink()) {
    out.add(narSymlink(await readlink(path, { encoding: 'buffer' }).catch((err) => Promise.reject(unreadable(path, err)))));
  } else if (stats.isFile()) {
    yield* dumpRegular(path, stats, out);
  } else if (stats.isDirectory()) {
    out.add(NAR_DIRECTORY_OPEN);
    const names = await readdir(path, { encoding: 'buffer' }).catch((err) => Promise.reject(unreadable(path, err)));
    names.sort(Buffer.compare);
    for (const name of names) {
      const child = Buffer.concat([path, SLASH, name]);
      out.add(narEntryOpen(name));
      yield* dumpNode(child, await lstatOrFail(child), out);
      out.add(NAR_ENTRY_CLOSE);
      if (out.full) yield out.take() as Buffer;
    }
    out.add(NAR_CLOSE);
  } else {
    throw new CachectlError(
      'NAR_UNREADABLE',
      `${path.toString()} is neither a regular file, a directory nor a symlink; a NAR cannot hold it`,
    );
  }
  if (out.full) yield out.take() as Buffer;
}

async function* dumpRegular(path: Buffer, stats: Stats, out: Gather): AsyncGenerator<Buffer> {
  const size = stats.size;
  out.add(narRegularHeader((stats.mode & 0o100) !== 0, size));
  const file = await open(path, 'r').catch((err) => Promise.reject(unreadable(path, err)));
  try {
    let offset = 0;
    while (offset < size) {
      const want = Math.min(READ_BYTES, size - offset);
      const buffer = Buffer.allocUnsafe(want);
      const { bytesRead } = await file.read(buffer, 0, want, offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
      out.add(bytesRead === want ? buffer : buffer.subarray(0, bytesRead));
      if (out.full) yield out.take() as Buffer;
    }
    // One more byte than lstat said means the file grew: the NAR would not match its header either way.
    if (offset !== size || (await file.read(Buffer.alloc(1), 0, 1, size)).bytesRead !== 0) {
      throw new CachectlError('NAR_UNREADABLE', `${path.toString()} changed size while it was being read`);
    }
  } finally {
    await file.close();
  }
  out.add(narRegularTrailer(size));
}
