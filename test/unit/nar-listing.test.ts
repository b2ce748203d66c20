import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { jsonString, NarListing } from '../../src/core/nar-listing.js';
import { dumpNar } from '../../src/nix/nar-dump.js';

/** The NAR of `path` and the listing made on the way. */
async function dumpWithListing(path: string): Promise<{ nar: Buffer; listing: Buffer }> {
  const listing = new NarListing();
  const chunks: Buffer[] = [];
  for await (const chunk of dumpNar(path, { listing })) chunks.push(chunk);
  return { nar: Buffer.concat(chunks), listing: listing.bytes() };
}

describe('NAR listings', () => {
  it("escapes strings as nix::toJSON does (Nix 2.8's json.cc), bytes of any encoding as they are", () => {
    const cases: [Buffer, string][] = [
      [Buffer.from('plain name.txt'), '"plain name.txt"'],
      [Buffer.from('"q" \\ /'), '"\\"q\\" \\\\ /"'],
      [Buffer.from('a\nb\rc\td'), '"a\\nb\\rc\\td"'],
      // no \b or \f short forms, unlike JSON.stringify; four lower-case hex digits
      [Buffer.from('\b\f\x01\x1f'), '"\\u0008\\u000c\\u0001\\u001f"'],
      [Buffer.from('del\x7f'), '"del\x7f"'],
      [Buffer.from('naïve 😀'), '"naïve 😀"'],
    ];
    // jsonString gives one character per byte
    const bytesOf = (name: Buffer) => Buffer.from(jsonString(name), 'latin1');
    for (const [name, json] of cases) assert.deepEqual(bytesOf(name), Buffer.from(json), json);
    // Latin-1 é is not UTF-8: written as the byte it is
    assert.deepEqual(bytesOf(Buffer.from([0x61, 0xe9])), Buffer.from([0x22, 0x61, 0xe9, 0x22]));
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
    const text = listing.toString('utf8');
    const offsets = [...text.matchAll(/"narOffset":(\d+)/g)].map((match) => Number(match[1]));
    assert.equal(
      text.replace(/"narOffset":\d+/g, '"narOffset":N'),
      '{"version":1,"root":{"type":"directory","entries":{' +
        '"10":{"type":"regular","size":3,"narOffset":N},' +
        '"9":{"type":"regular","size":4,"narOffset":N},' +
        '"dir":{"type":"directory","entries":{' +
        `"big":{"type":"regular","size":${big.length},"narOffset":N},` +
        '"empty":{"type":"directory","entries":{}},' +
        '"link":{"type":"symlink","target":"../9"},' +
        '"run":{"type":"regular","size":10,"executable":true,"narOffset":N},' +
        '"tail":{"type":"regular","size":17,"narOffset":N}}}}}}',
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
    // The offsets of Nix's own listings of the same shapes (shared/reference's cache of nix copy).
    assert.equal(
      (await dumpWithListing(join(dir, 'file'))).listing.toString(),
      '{"version":1,"root":{"type":"regular","size":5,"narOffset":96}}',
    );
    assert.equal(
      (await dumpWithListing(join(dir, 'link'))).listing.toString(),
      '{"version":1,"root":{"type":"symlink","target":"/dev/null"}}',
    );
  });
});
