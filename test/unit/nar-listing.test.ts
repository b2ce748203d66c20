import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { jsonString, NarListing } from '../../src/core/nar-listing.js';
import { dumpNar } from '../../src/nix/nar-dump.js';

/** The NAR of `path` and the listing made on the way. */
async function dumpWithListing(path: string): Promise<{ nar: Buffer; listing: Buffer | undefined }> {
  const listing = new NarListing();
  const chunks: Buffer[] = [];
  for (const chunk of dumpNar(path, { listing })) chunks.push(chunk);
  return { nar: Buffer.concat(chunks), listing: listing.bytes() };
}

describe('NAR listings', () => {
  it("escapes strings as nlohmann's dump does (Nix >= 2.34), UTF-8 as it is", () => {
    const cases: [string, string][] = [
      ['plain name.txt', '"plain name.txt"'],
      ['"q" \\ /', '"\\"q\\" \\\\ /"'],
      ['a\nb\rc\td', '"a\\nb\\rc\\td"'],
      // \b and \f short, the rest below 0x20 as four lower-case hex digits (Nix 2.8 wrote \u0008 and \u000c)
      ['\b\f\x01\x1f', '"\\b\\f\\u0001\\u001f"'],
      ['del\x7f', '"del\x7f"'],
      ['naïve 😀', '"naïve 😀"'],
    ];
    for (const [name, json] of cases) assert.equal(jsonString(name), json, json);
  });

  it('writes no listing for a path with a name that is not UTF-8, which JSON cannot hold', async () => {
    const root = join(mkdtempSync(join(tmpdir(), 'cachectl-listing-')), 'out');
    mkdirSync(root);
    // Latin-1 é: the name nix copy (2.34) fails a whole path on
    writeFileSync(Buffer.from(`${root}/caf\xe9`, 'latin1'), 'x');
    assert.equal((await dumpWithListing(root)).listing, undefined);
    const link = join(dirname(root), 'link');
    symlinkSync(Buffer.from(`caf\xe9`, 'latin1'), link);
    assert.equal((await dumpWithListing(link)).listing, undefined);
  });

  it("lists a tree in Nix's key order and NAR order; each narOffset is where the file's bytes start", async () => {
    const root = join(mkdtempSync(join(tmpdir(), 'cachectl-listing-')), 'out');
    mkdirSync(join(root, 'dir', 'empty'), { recursive: true });
    writeFileSync(join(root, '10'), 'ten');
    writeFileSync(join(root, '9'), 'nine');
    writeFileSync(join(root, 'dir', 'run'), '#!/bin/sh\n');
    chmodSync(join(root, 'dir', 'run'), 0o755);
    // large enough to pass the dump's gathering by, after small files
    const big = Buffer.alloc(700 * 1024, 'b');
    writeFileSync(join(root, 'dir', 'big'), big);
    writeFileSync(join(root, 'dir', 'tail'), 'after the big one');
    symlinkSync('../9', join(root, 'dir', 'link'));
    const { nar, listing } = await dumpWithListing(root);
    const text = listing?.toString('utf8') ?? '';
    const offsets = [...text.matchAll(/"narOffset":(\d+)/g)].map((match) => Number(match[1]));
    assert.equal(
      text.replace(/"narOffset":\d+/g, '"narOffset":N'),
      '{"root":{"entries":{' +
        '"10":{"narOffset":N,"size":3,"type":"regular"},' +
        '"9":{"narOffset":N,"size":4,"type":"regular"},' +
        '"dir":{"entries":{' +
        `"big":{"narOffset":N,"size":${big.length},"type":"regular"},` +
        '"empty":{"entries":{},"type":"directory"},' +
        '"link":{"target":"../9","type":"symlink"},' +
        '"run":{"executable":true,"narOffset":N,"size":10,"type":"regular"},' +
        '"tail":{"narOffset":N,"size":17,"type":"regular"}},"type":"directory"}},"type":"directory"},"version":1}',
    );
    const contents = ['ten', 'nine', big.toString(), '#!/bin/sh\n', 'after the big one'];
    assert.deepEqual(
      offsets.map((offset, i) => nar.subarray(offset, offset + (contents[i] ?? '').length).toString()),
      contents,
    );
  });

  it('lists a store path that is a single file or a symlink', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachectl-listing-'));
    writeFileSync(join(dir, 'file'), 'tiny\n');
    symlinkSync('/dev/null', join(dir, 'link'));
    // The offsets of Nix's own listings of the same shapes (a cache nix copy wrote).
    assert.equal(
      (await dumpWithListing(join(dir, 'file'))).listing?.toString(),
      '{"root":{"narOffset":96,"size":5,"type":"regular"},"version":1}',
    );
    assert.equal(
      (await dumpWithListing(join(dir, 'link'))).listing?.toString(),
      '{"root":{"target":"/dev/null","type":"symlink"},"version":1}',
    );
  });
});
