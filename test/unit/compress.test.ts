import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { decompress } from 'zstd-napi';
import { canDecompress, compress, decompress as decompressNar } from '../../src/upload/compress.js';

async function* chunksOf(data: Buffer, failAfter?: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < data.length; at += 1000) {
    if (failAfter !== undefined && at >= failAfter) throw new Error('the source failed');
    yield data.subarray(at, at + 1000);
  }
}

async function compressed(data: Buffer, failAfter?: number): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of compress(chunksOf(data, failAfter), 'zstd', data.length)) out.push(chunk);
  return Buffer.concat(out);
}

/** Text-like input of `size` bytes, different for each seed. */
const input = (seed: number, size: number) =>
  Buffer.from(Array.from({ length: size }, (_, i) => String.fromCharCode(97 + ((i * seed) % 26))).join(''));

describe('zstd compression (contexts of small NARs are kept and reused)', () => {
  it('each frame decompresses to its input, one after another and many at once', async () => {
    const inputs = [1, 2, 3, 5, 7, 11, 13].map((seed) => input(seed, 300 + seed * 997));
    for (const data of inputs) assert.deepEqual(decompress(await compressed(data)), data);
    const frames = await Promise.all(inputs.map((data) => compressed(data)));
    for (const [i, frame] of frames.entries()) assert.deepEqual(decompress(frame), inputs[i]);
  });

  it('a compression whose source fails leaves no half frame in the next one', async () => {
    const data = Buffer.concat([input(3, 5000), randomBytes(5000)]);
    for (let round = 0; round < 10; round += 1) {
      await assert.rejects(compressed(data, 4000), /the source failed/);
      assert.deepEqual(decompress(await compressed(data)), data);
    }
  });

  it('a NAR above the threaded size and one of unknown size come out whole too', async () => {
    const big = Buffer.concat([input(17, 3 * 1024 * 1024), randomBytes(3 * 1024 * 1024)]);
    assert.deepEqual(decompress(await compressed(big)), big);
    const out: Buffer[] = [];
    for await (const chunk of compress(chunksOf(big), 'zstd', 0)) out.push(chunk);
    assert.deepEqual(decompress(Buffer.concat(out)), big);
    const small = input(19, 700);
    assert.deepEqual(decompress(await compressed(small)), small);
  });

  it('with reuseOutput, two buffers take turns and each chunk stays whole until the second after it is asked for', async () => {
    const big = Buffer.concat([randomBytes(6 * 1024 * 1024), input(23, 6 * 1024 * 1024)]);
    const held: Buffer[] = [];
    const copies: Buffer[] = [];
    let turns = 0;
    for await (const chunk of compress(chunksOf(big), 'zstd', big.length, { reuseOutput: true })) {
      // As file:// does: the chunk before is still being written while this one is made.
      const before = held.at(-1);
      if (before !== undefined) assert.deepEqual(before, copies.at(-1), 'the chunk before was written over');
      if (chunk.buffer === held.at(-2)?.buffer) turns += 1;
      held.push(chunk);
      copies.push(Buffer.from(chunk));
    }
    assert.deepEqual(decompress(Buffer.concat(copies)), big);
    assert.ok(copies.length > 4, `${copies.length} chunks: too few to show the turns`);
    assert.equal(turns, copies.length - 2, 'each chunk reuses the buffer of the second before it');
  });
});

describe('decompressing a NAR file read from a cache (cachectl verify --deep)', () => {
  const data = Buffer.concat([input(3, 200_000), randomBytes(300_000)]);
  const read = async (file: Buffer, compression: string) => {
    const out: Buffer[] = [];
    // Each chunk is valid until the next is asked for: copied.
    for await (const chunk of decompressNar(chunksOf(file), compression)) out.push(Buffer.from(chunk));
    return Buffer.concat(out);
  };
  const files: Record<string, Buffer> = {
    none: data,
    zstd: Buffer.alloc(0),
    xz: execFileSync('xz', ['-z', '-c'], { input: data }),
    bzip2: execFileSync('bzip2', ['-z', '-c'], { input: data }),
    gzip: gzipSync(data),
    br: brotliCompressSync(data),
  };

  it('reads every compression cachectl and nix copy write, and gzip and brotli', async () => {
    files['zstd'] = await compressed(data);
    for (const [compression, file] of Object.entries(files)) {
      assert.ok(canDecompress(compression), compression);
      assert.deepEqual(await read(file, compression), data, compression);
    }
    assert.equal(canDecompress('lz4'), false);
  });

  it('fails a cut-off or garbled file with NAR_CORRUPT, naming the compression', async () => {
    files['zstd'] = await compressed(data);
    for (const compression of ['zstd', 'xz', 'bzip2', 'gzip', 'br']) {
      const file = files[compression] as Buffer;
      await assert.rejects(read(file.subarray(0, file.length - 20), compression), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'NAR_CORRUPT', `${compression}: ${err.message}`);
        assert.match(err.message, new RegExp(`does not decompress as ${compression}`));
        return true;
      });
    }
    await assert.rejects(read(Buffer.from('not zstd at all'), 'zstd'), /does not decompress as zstd/);
  });
});
