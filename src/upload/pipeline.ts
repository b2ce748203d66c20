import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { CachectlError } from '../core/errors.js';
import { formatSha256 } from '../core/hash.js';
import type { Compression, NarInfo } from '../core/narinfo.js';
import { hashPartOf } from '../core/store-path.js';
import type { CacheBackend } from '../cache/backend.js';
import type { Limiter } from '../core/limit.js';
import { narKey, narListingKey } from '../cache/layout.js';
import type { PathInfo } from '../nix/local-store.js';
import { dumpNar } from '../nix/nar-dump.js';
import { NarListing } from '../core/nar-listing.js';
import { compress, compressSmall } from './compress.js';

/**
 * NARs up to this size are compressed into memory and uploaded in one request, which the backend can retry: one
 * round trip against a multipart upload's five or more (create, parts two at a time, complete), which from a
 * far-away server take longer than the data. Above it, a NAR streams, never whole in memory.
 */
const WHOLE_NAR_BYTES = 32 * 1024 * 1024;
/**
 * NARs up to this size (most paths) give their CPU slot back before their request goes out; larger whole ones keep
 * it, which bounds the memory their bodies hold to the slots' count.
 */
const SMALL_NAR_BYTES = 1024 * 1024;
/**
 * NARs above this size use the most memory (a threaded zstd context, and their whole body or multipart parts in
 * flight), so the pusher sends them one at a time.
 */
export const LARGE_NAR_BYTES = 8 * 1024 * 1024;

/** What the NAR upload learned, for the narinfo. */
export interface UploadedNar {
  key: string;
  compression: Compression;
  fileHash: Buffer;
  fileSize: number;
  narSize: number;
}

/**
 * Streams the NAR of `info.path` to `nar/<NarHash>…`: dump → sha256 → compress → sha256 → upload, never whole
 * in memory. The NarHash computed on the way must equal the store's, or the stream fails at its end and the
 * backend publishes nothing: a corrupt store path is refused, not uploaded. With `withListing`, the NAR's listing
 * is made on the way and goes up beside it (`<hash>.ls`), unless a name in it is not UTF-8.
 *
 * A small NAR (up to SMALL_NAR_BYTES) is made, checked and compressed whole in one synchronous step, and its
 * requests then wait out a far server's round trip beside many others while the CPU goes on. A larger one takes
 * a slot of `compressing` for its work on the CPU and holds it throughout, as a streamed one compresses while
 * it sends (xz's small ones give it back before their request).
 */
export async function uploadNar(
  backend: CacheBackend,
  info: PathInfo,
  options: {
    compression: Compression;
    withListing: boolean;
    compressing: Limiter;
    onNarBytes?: (bytes: number) => void;
  },
): Promise<UploadedNar> {
  const { compression, onNarBytes = () => undefined } = options;
  const listing = options.withListing ? new NarListing() : undefined;
  let narSize = 0;
  const checkedNar = async function* (): AsyncGenerator<Buffer> {
    const narHash = createHash('sha256');
    // zstd copies what it compresses: the dump may write each chunk over the one before.
    for (const chunk of dumpNar(info.path, { listing, reuse: compression === 'zstd' })) {
      narHash.update(chunk);
      narSize += chunk.length;
      onNarBytes(chunk.length);
      yield chunk;
    }
    checkNar(info, narHash.digest(), narSize);
  };
  let fileSize = 0;
  const fileHash = createHash('sha256');
  let fileDigest: Buffer | undefined;
  /** The FileHash, once the file is made: S3 signs a whole NAR's PUT with it, and the narinfo names it. */
  const fileHashDigest = () => (fileDigest ??= fileHash.digest());
  const counted = async function* (reuseOutput: boolean): AsyncGenerator<Buffer> {
    for await (const chunk of compress(checkedNar(), compression, info.narSize, { reuseOutput })) {
      fileHash.update(chunk);
      fileSize += chunk.length;
      yield chunk;
    }
  };
  const key = narKey(info.narHash, compression);
  const putListing = async () => {
    // none for a path with a name JSON cannot hold (see NarListing)
    const body = listing?.bytes();
    if (body !== undefined) await backend.put(narListingKey(hashPartOf(info.path)), body, 'listing');
  };
  // Copied as it comes into one buffer of the most it can grow to, while zstd's output buffers take turns: the
  // chunks kept and then concatenated held twice the body (a 20 MiB NAR, 40 MiB at the end).
  const compressWhole = async () => {
    let body = Buffer.allocUnsafe(boundOf(info.narSize));
    let size = 0;
    for await (const chunk of counted(true)) {
      if (size + chunk.length > body.length) body = Buffer.concat([body.subarray(0, size)], 2 * body.length);
      chunk.copy(body, size);
      size += chunk.length;
    }
    return body.subarray(0, size);
  };
  const putWhole = async (body: Buffer, sha256: Buffer) => {
    await Promise.all([backend.put(key, body, 'nar', { sha256 }), putListing()]);
  };
  const small = info.narSize !== 0 && info.narSize <= SMALL_NAR_BYTES;
  if (small && compression !== 'xz') {
    // Made whole in one synchronous go, no stream between the steps: most paths are a few KiB, and for them the
    // generators' promises cost more than the work (bench/push, 1000 tiny paths). After a turn of the event loop:
    // paths that follow each other in microtasks alone would hold off every I/O callback until the last (a
    // file:// flush answered at once was seen a second later, and the narinfos waiting for it with it).
    await new Promise(setImmediate);
    // Each chunk copied out of the dump's reused buffer, at its size: a new megabyte buffer a path made the
    // garbage collector a fifth of the time.
    const parts: Buffer[] = [];
    for (const chunk of dumpNar(info.path, { listing, reuse: true })) parts.push(Buffer.from(chunk));
    const nar = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    checkNar(info, createHash('sha256').update(nar).digest(), nar.length);
    onNarBytes(nar.length);
    const body = compression === 'zstd' ? compressSmall(nar) : nar;
    const sha256 = createHash('sha256').update(body).digest();
    await putWhole(body, sha256);
    return { key, compression, fileHash: sha256, fileSize: body.length, narSize: nar.length };
  } else if (small) {
    const body = await options.compressing.run(compressWhole);
    await putWhole(body, fileHashDigest());
  } else if (info.narSize !== 0 && info.narSize <= WHOLE_NAR_BYTES) {
    await options.compressing.run(async () => {
      const body = await compressWhole();
      await putWhole(body, fileHashDigest());
    });
  } else {
    await options.compressing.run(() =>
      backend.putStream(key, counted(backend.releasesStreamChunks), 'nar', boundOf(info.narSize)),
    );
    await putListing();
  }
  return { key, compression, fileHash: fileHashDigest(), fileSize, narSize };
}

/** The most a NAR of `narSize` bytes can take compressed: incompressible data grows a little under compression. */
function boundOf(narSize: number): number {
  return Math.ceil(narSize * 1.01) + 1024 * 1024;
}

/** Fails unless the NAR made of `info.path` is the one the Nix database holds: a corrupt path is not uploaded. */
function checkNar(info: PathInfo, digest: Buffer, narSize: number): void {
  if (!digest.equals(info.narHash) || (info.narSize !== 0 && narSize !== info.narSize)) {
    throw new CachectlError(
      'NAR_HASH_MISMATCH',
      `${info.path} does not match the Nix database (NarHash ${formatSha256(digest)}, ${narSize} bytes; expected ` +
        `${formatSha256(info.narHash)}, ${info.narSize} bytes): the store path is corrupt; repair it with ` +
        `nix-store --repair-path ${info.path}`,
    );
  }
}

/** The narinfo for an uploaded NAR, with the store's signatures (the push adds its own). */
export function makeNarInfo(info: PathInfo, nar: UploadedNar): NarInfo {
  const narInfo: NarInfo = {
    storePath: info.path,
    url: nar.key,
    compression: nar.compression,
    fileHash: { algorithm: 'sha256', digest: nar.fileHash },
    fileSize: nar.fileSize,
    narHash: { algorithm: 'sha256', digest: info.narHash },
    narSize: nar.narSize,
    references: info.references.map((ref) => basename(ref)),
    sigs: [...info.sigs],
  };
  if (info.deriver !== undefined) narInfo.deriver = basename(info.deriver);
  if (info.ca !== undefined) narInfo.ca = info.ca;
  return narInfo;
}
