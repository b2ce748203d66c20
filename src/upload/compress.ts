import { spawn } from 'node:child_process';
import { Readable, type Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import zstd from 'zstd-napi/binding.js';
import { CachectlError } from '../core/errors.js';
import type { Compression } from '../core/narinfo.js';

/** Level 3: zstd's default and the best speed/size trade for uploads (about what `nix copy` writes). */
const ZSTD_LEVEL = 3;
/** NARs above this size are compressed by zstd worker threads while the main thread reads and hashes. */
const ZSTD_THREADED_ABOVE_BYTES = 4 * 1024 * 1024;
const ZSTD_WORKERS = 2;
/**
 * Input per worker job. A context buffers several jobs: zstd's default for level 3, 8 MiB, holds more memory
 * for no more speed; 2 MiB jobs left the workers waiting (both measured with bench/push).
 */
const ZSTD_JOB_BYTES = 4 * 1024 * 1024;
const ZSTD_OUT_BYTES = 1024 * 1024;
/** Slack over the input size for a small NAR's whole frame (header, block headers, end mark). */
const ZSTD_FRAME_SLACK_BYTES = 1024;

/**
 * Compresses a stream of chunks. `sizeBytes` is the exact input size, when known. With `reuseOutput` (for a
 * consumer done with each chunk once it asks for the second after it), zstd's output buffers take turns instead
 * of each chunk getting new memory: new memory costs a page fault per 4 KiB, about a tenth of a big NAR's time.
 */
export function compress(
  source: AsyncIterable<Buffer>,
  compression: Compression,
  sizeBytes: number,
  options: { reuseOutput?: boolean } = {},
): AsyncIterable<Buffer> {
  switch (compression) {
    case 'none':
      return source;
    case 'zstd':
      return compressZstd(source, sizeBytes, options.reuseOutput === true);
    case 'xz':
      return compressXz(source);
  }
}

/**
 * Contexts of small NARs, kept for the next: making one costs 35 µs against 4 µs for a reset, most of a tiny path's
 * compression. Bounded, so that a burst of parallel small NARs does not leave their workspaces behind.
 */
const idleContexts: zstd.CCtx[] = [];
const IDLE_CONTEXTS_KEPT = 8;
/** Only contexts of NARs up to this size are kept: a context keeps the workspace its largest input needed. */
const KEPT_CONTEXT_MAX_BYTES = 1024 * 1024;

/**
 * One context of a larger NAR, kept for the next. zstd-napi does not tell V8 how much memory a context holds (a
 * threaded one, tens of MB), so a new one a NAR stayed allocated until a garbage collection happened to run: six
 * 60 MiB NARs, pushed one after another, peaked at 200 MB. The pusher compresses one large NAR at a time.
 */
let idleLargeContext: zstd.CCtx | undefined;

/** A context for a NAR, small or not: a kept one where there is one, else a new one. */
function takeContext(small: boolean): zstd.CCtx {
  const kept = small ? idleContexts.pop() : idleLargeContext;
  if (!small) idleLargeContext = undefined;
  return kept ?? new zstd.CCtx();
}

/** Keeps `cctx` for the next NAR where there is room, reset: which also ends a frame a failure left half-done. */
function giveBack(cctx: zstd.CCtx, small: boolean): void {
  if (small ? idleContexts.length >= IDLE_CONTEXTS_KEPT : idleLargeContext !== undefined) return;
  cctx.reset(zstd.ResetDirective.sessionAndParameters);
  if (small) idleContexts.push(cctx);
  else idleLargeContext = cctx;
}

async function* compressZstd(
  source: AsyncIterable<Buffer>,
  sizeBytes: number,
  reuseOutput: boolean,
): AsyncGenerator<Buffer> {
  const small = sizeBytes > 0 && sizeBytes <= KEPT_CONTEXT_MAX_BYTES;
  const cctx = takeContext(small);
  try {
    yield* compressWith(cctx, source, sizeBytes, sizeBytes > ZSTD_THREADED_ABOVE_BYTES, reuseOutput);
  } finally {
    giveBack(cctx, small);
  }
}

/**
 * A small NAR (up to KEPT_CONTEXT_MAX_BYTES) compressed whole in one call, with a kept context: the same frame as
 * compressZstd's (its size pledged, level ZSTD_LEVEL).
 */
export function compressSmall(input: Buffer): Buffer {
  const cctx = takeContext(true);
  try {
    cctx.setParameter(zstd.CParameter.compressionLevel, ZSTD_LEVEL);
    const out = Buffer.allocUnsafe(input.length + (input.length >> 7) + ZSTD_FRAME_SLACK_BYTES);
    const size = cctx.compress2(out, input);
    // copied when it shrank much, so that the body held until its upload ends pins no more than it needs
    return size < out.length / 2 ? Buffer.from(out.subarray(0, size)) : out.subarray(0, size);
  } finally {
    giveBack(cctx, true);
  }
}

async function* compressWith(
  cctx: zstd.CCtx,
  source: AsyncIterable<Buffer>,
  sizeBytes: number,
  threaded: boolean,
  reuseOutput: boolean,
): AsyncGenerator<Buffer> {
  cctx.setParameter(zstd.CParameter.compressionLevel, ZSTD_LEVEL);
  if (threaded) {
    cctx.setParameter(zstd.CParameter.nbWorkers, ZSTD_WORKERS);
    cctx.setParameter(zstd.CParameter.jobSize, ZSTD_JOB_BYTES);
  }
  // Nix 2.8 refuses frames whose window needs more than 2^27 bytes; level 3 never asks for that much.
  if (sizeBytes > 0) cctx.setPledgedSrcSize(sizeBytes);
  // A small NAR gets an output buffer of its own size, not a megabyte: a thousand tiny paths stay cheap.
  const outBytes =
    sizeBytes > 0 ? Math.min(ZSTD_OUT_BYTES, sizeBytes + (sizeBytes >> 7) + ZSTD_FRAME_SLACK_BYTES) : ZSTD_OUT_BYTES;
  let out = Buffer.allocUnsafe(outBytes);
  // The consumer may still hold the chunk before the one it asks for (a write in flight): two buffers take turns.
  let spare = reuseOutput ? Buffer.allocUnsafe(outBytes) : undefined;
  const run = function* (input: Buffer, end: zstd.EndDirective): Generator<Buffer> {
    for (;;) {
      const [remaining, produced, consumed] = cctx.compressStream2(out, input, end);
      if (spare !== undefined) {
        if (produced > 0) {
          yield out.subarray(0, produced);
          [out, spare] = [spare, out];
        }
      } else if (produced >= outBytes / 2) {
        yield out.subarray(0, produced);
        out = Buffer.allocUnsafe(outBytes);
      } else if (produced > 0) {
        // Copied, so that a small piece held downstream (in a multipart part) does not pin a whole buffer.
        yield Buffer.from(out.subarray(0, produced));
      }
      input = input.subarray(consumed);
      if (input.length === 0 && (end === zstd.EndDirective.continue || remaining === 0)) return;
    }
  };
  for await (const chunk of source) yield* run(chunk, zstd.EndDirective.continue);
  yield* run(Buffer.alloc(0), zstd.EndDirective.end);
}

/** xz through the `xz` program (xz-utils): Node has no liblzma, and xz is slow enough that a pipe costs nothing. */
function compressXz(source: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  return throughProgram(source, 'xz', ['-z', '-c', '-6', '-T0'], (why) => {
    throw new CachectlError(
      'CONFIG_INVALID',
      `cannot run xz for --compression xz: ${why} (install xz-utils, or use --compression zstd)`,
    );
  });
}

/** `source` piped through `program`; `cannotRun` throws the error for a program that does not start. */
async function* throughProgram(
  source: AsyncIterable<Buffer>,
  program: string,
  args: readonly string[],
  cannotRun: (why: string) => never,
): AsyncGenerator<Buffer> {
  const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'ignore'] });
  const closed = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  const outcome = Promise.allSettled([pipeline(Readable.from(source), child.stdin), closed]);
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const [fed, exit] = await outcome;
    if (exit.status === 'rejected') cannotRun((exit.reason as Error).message);
    if (fed.status === 'rejected') throw fed.reason;
    if (exit.value !== 0)
      throw new CachectlError('CACHE_WRITE_FAILED', `${program} exited with status ${String(exit.value)}`);
  } finally {
    if (child.exitCode === null) child.kill();
  }
}

/**
 * The compressions whose files `decompress` reads: what cachectl and `nix copy` write (zstd, xz, none, and bzip2,
 * Nix's default before), and gzip and brotli, which Node reads itself.
 */
const DECOMPRESSIBLE = new Set(['none', 'zstd', 'xz', 'bzip2', 'gzip', 'br']);

export function canDecompress(compression: string): boolean {
  return DECOMPRESSIBLE.has(compression);
}

/**
 * Decompresses a NAR file compressed by `compression` (a narinfo's Compression, one of canDecompress's). A file
 * that is cut off or corrupt fails the stream with NAR_CORRUPT. Each chunk is valid until the next is asked for.
 */
export function decompress(source: AsyncIterable<Buffer>, compression: string): AsyncIterable<Buffer> {
  const unreadable = (why: string): never => {
    throw new CachectlError('NAR_CORRUPT', `it does not decompress as ${compression}: ${why}`);
  };
  switch (compression) {
    case 'none':
      return source;
    case 'zstd':
      return decompressZstd(source, unreadable);
    case 'gzip':
      return throughTransform(source, createGunzip(), unreadable);
    case 'br':
      return throughTransform(source, createBrotliDecompress(), unreadable);
    case 'xz':
    case 'bzip2':
      return failingAs(
        throughProgram(source, compression, ['-d', '-c'], (why) => {
          throw new CachectlError(
            'CONFIG_INVALID',
            `cannot run ${compression} to read a ${compression} NAR: ${why} ` +
              `(install ${compression === 'xz' ? 'xz-utils' : 'bzip2'})`,
          );
        }),
        unreadable,
      );
    default:
      throw new Error(`cannot decompress ${compression}`);
  }
}

async function* decompressZstd(
  source: AsyncIterable<Buffer>,
  unreadable: (why: string) => never,
): AsyncGenerator<Buffer> {
  const dctx = new zstd.DCtx();
  const out = Buffer.allocUnsafe(ZSTD_OUT_BYTES);
  // 0 once a frame is whole: what is left at the end tells a cut-off file.
  let frameLeft = 1;
  for await (const chunk of source) {
    let input = chunk;
    for (;;) {
      let produced, consumed;
      try {
        [frameLeft, produced, consumed] = dctx.decompressStream(out, input);
      } catch (err) {
        return unreadable((err as Error).message);
      }
      if (produced > 0) yield out.subarray(0, produced);
      input = input.subarray(consumed);
      if (input.length === 0 && produced < out.length) break;
    }
  }
  if (frameLeft !== 0) unreadable('the file ends inside a frame (truncated)');
}

/** `source` through a zlib transform, its failures named by `unreadable`. */
function throughTransform(
  source: AsyncIterable<Buffer>,
  transform: Transform,
  unreadable: (why: string) => never,
): AsyncIterable<Buffer> {
  const fed = pipeline(Readable.from(source), transform);
  fed.catch(() => undefined); // the transform fails with it, and the reader sees that
  return failingAs(transform, unreadable);
}

/** `chunks`, its failures (but a missing program) becoming `unreadable`'s error. */
async function* failingAs(chunks: AsyncIterable<Buffer>, unreadable: (why: string) => never): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of chunks) yield chunk;
  } catch (err) {
    if (err instanceof CachectlError && err.code === 'CONFIG_INVALID') throw err;
    unreadable((err as Error).message);
  }
}
