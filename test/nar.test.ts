import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { dumpNar } from '../src/nix/nar-dump.js';
import { nix32Encode } from '../src/core/nix32.js';
import { buildFixtures, nixAtLeast, requireNix, testEnv, type Fixture, tempDir, withNix } from './helpers/nix.js';

/** The NAR as dumpNar streams it; with `reuse`, each chunk is copied before the next is asked for, as zstd does. */
async function narOf(path: string, reuse = false): Promise<Buffer> {
  return (await dumpWithMemory(path, reuse)).nar;
}

/** The NAR, and how many chunks and distinct memory blocks it came in. */
async function dumpWithMemory(path: string, reuse: boolean) {
  const chunks: Buffer[] = [];
  const memory = new Set<ArrayBufferLike>();
  for (const chunk of dumpNar(path, { reuse })) {
    memory.add(chunk.buffer);
    chunks.push(reuse ? Buffer.from(chunk) : chunk);
  }
  return { nar: Buffer.concat(chunks), chunks: chunks.length, memoryBlocks: memory.size };
}

function nixDump(path: string): Buffer {
  return execFileSync('nix-store', ['--dump', path], { env: testEnv(), maxBuffer: 1 << 30 });
}

describe(withNix('NAR serialization equals nix-store --dump'), () => {
  before(requireNix);

  const fixtures: Fixture[] = [
    'tiny',
    'lib',
    'app',
    'top',
    'multi.out',
    'multi.dev',
    'tree',
    'symroot',
    'execroot',
    'big',
  ];
  it('for every fixture: every node kind, symlink and executable roots, unicode, a 41 MiB NAR', async () => {
    const paths = await buildFixtures(fixtures);
    for (const fixture of fixtures) {
      const theirs = nixDump(paths[fixture]);
      for (const reuse of [false, true]) {
        const ours = await narOf(paths[fixture], reuse);
        assert.equal(ours.length, theirs.length, `${fixture}, reuse ${reuse}`);
        assert.ok(ours.equals(theirs), `${fixture}, reuse ${reuse}: NAR bytes differ`);
      }
    }
  });

  it('writes a 41 MiB NAR into one reused buffer when asked to, and into a buffer a chunk otherwise', async () => {
    const { big } = await buildFixtures(['big']);
    const reused = await dumpWithMemory(big, true);
    assert.ok(reused.chunks >= 40, `${reused.chunks} chunks`);
    assert.equal(reused.memoryBlocks, 1);
    const own = await dumpWithMemory(big, false);
    assert.equal(own.memoryBlocks, own.chunks);
    assert.ok(own.nar.equals(reused.nar));
  });

  it('for names that are not UTF-8, bytewise order, and sizes around the chunk boundaries', async () => {
    const dir = tempDir('nar');
    const root = join(dir, 'root');
    mkdirSync(root);
    // Bytes 0xff and 0x80 are not UTF-8; 0xef 0x80 0x80 (U+F000) sorts after 😀 (U+1F600) in UTF-16 but not in bytes.
    for (const name of [
      Buffer.from([0x66, 0xff]),
      Buffer.from([0x66, 0x80]),
      Buffer.from('f\u{1F600}'),
      Buffer.from('f\uF000'),
    ]) {
      writeFileSync(Buffer.concat([Buffer.from(`${root}/`), name]), name);
    }
    for (const size of [0, 1, 7, 8, 9, 256 * 1024 - 1, 256 * 1024, 1024 * 1024 + 3, 3 * 1024 * 1024]) {
      writeFileSync(join(root, `size-${size}`), Buffer.alloc(size, size % 251));
    }
    mkdirSync(join(root, 'nested/empty'), { recursive: true });
    writeFileSync(join(root, 'nested/run'), '#!/bin/sh\n');
    chmodSync(join(root, 'nested/run'), 0o755);
    writeFileSync(join(root, 'nested/group-exec-only'), 'x');
    chmodSync(join(root, 'nested/group-exec-only'), 0o654);
    symlinkSync('../size-0', join(root, 'nested/link'));
    symlinkSync(`/${'long/'.repeat(100)}target`, join(root, 'long-link'));
    const ours = await narOf(root);
    assert.ok(ours.equals(nixDump(root)), 'NAR bytes differ');
    assert.ok((await narOf(root, true)).equals(ours), 'NAR bytes differ when the chunk buffer is reused');
    // The hash Nix computes for the same tree, as a second, independent oracle.
    const nixHash = execFileSync('nix-hash', ['--type', 'sha256', '--base32', root], { env: testEnv() })
      .toString()
      .trim();
    assert.equal(nix32Encode(createHash('sha256').update(ours).digest()), nixHash);
  });

  it('for directories nested as deep as Nix allows, their headers filling a nearly full chunk', async () => {
    const root = join(tempDir('nar'), 'root');
    mkdirSync(root);
    // `a` leaves the chunk just short of full; the levels under `b` then add headers before the next chance to
    // take it: 1500 levels, about 200 KB (past the chunk buffer's room), where Nix has no limit (2.8); from 2.34
    // Nix refuses 64 levels or more, so 63, with names as long as a path of 4096 bytes allows (about 12 KB).
    writeFileSync(join(root, 'a'), Buffer.alloc(1024 * 1024 - 1000, 1));
    const bounded = nixAtLeast('2.34');
    const level = bounded ? 'd'.repeat(60) : 'd';
    const levels = (count: number) => Array.from({ length: count }, () => level);
    mkdirSync(join(root, 'b', ...levels(bounded ? 62 : 1500)), { recursive: true });
    const theirs = nixDump(root);
    for (const reuse of [false, true]) assert.ok((await narOf(root, reuse)).equals(theirs), `reuse ${reuse}`);
    if (bounded) {
      mkdirSync(join(root, 'b', ...levels(63)));
      assert.throws(() => nixDump(root), /exceeds maximum NAR directory depth of 64/);
    }
  });

  it('refuses what a NAR cannot hold, naming the file', async () => {
    const dir = tempDir('nar');
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    await assert.rejects(narOf(dir), /fifo is neither a regular file, a directory nor a symlink/);
    await assert.rejects(narOf(join(dir, 'missing')), /cannot read .*missing/);
  });
});

describe(withNix('nix32 against Nix'), () => {
  before(requireNix);
  it('encodes digests as `nix hash to-base32` does', () => {
    for (const text of ['', 'abc', 'cachectl']) {
      const digest = createHash('sha256').update(text).digest();
      const nix = execFileSync('nix', ['hash', 'to-base32', `sha256:${digest.toString('hex')}`], { env: testEnv() });
      assert.equal(`${nix32Encode(digest)}\n`, nix.toString(), text);
    }
  });
});
