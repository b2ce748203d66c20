import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/nix.js';
import { describe, it } from 'node:test';
import { FileBackend } from '../../src/cache/file.js';
import { findPresent } from '../../src/cache/present.js';
import { nix32Encode } from '../../src/core/nix32.js';
import { createHash } from 'node:crypto';

const hashPart = (i: number) => nix32Encode(createHash('sha256').update(String(i)).digest().subarray(0, 20));

/** A FileBackend that counts the requests findPresent makes. */
class CountingBackend extends FileBackend {
  heads = 0;
  pages = 0;
  override exists(key: string) {
    this.heads += 1;
    return super.exists(key);
  }
  override async *list(prefix: string, options: { startAfter?: string } = {}) {
    for await (const page of super.list(prefix, options)) {
      this.pages += 1;
      yield page;
    }
  }
}

/** The same directory, said to be listed as S3 lists it (a page of 1,000 keys a request): findPresent then lists. */
class PagedBackend extends CountingBackend {
  override readonly listsByPage = true;
}

describe('finding the narinfos a cache has', () => {
  const dir = tempDir('present');
  const stored = Array.from({ length: 5000 }, (_, i) => hashPart(i));
  for (const hash of stored) writeFileSync(join(dir, `${hash}.narinfo`), '');
  writeFileSync(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  const absent = Array.from({ length: 100 }, (_, i) => hashPart(100_000 + i));

  it('asks one HEAD each for a few paths', async () => {
    const backend = new PagedBackend(dir);
    const asked = [...stored.slice(0, 5), ...absent.slice(0, 5)];
    assert.deepEqual([...(await findPresent(backend, asked))].sort(), stored.slice(0, 5).sort());
    assert.deepEqual([backend.heads, backend.pages], [10, 0]);
  });

  it('lists for many paths, within a page budget, and asks HEADs only past the listed range', async () => {
    const backend = new PagedBackend(dir);
    const asked = [...stored.filter((_, i) => i % 125 === 0), ...absent.slice(0, 24)]; // 40 + 24 paths
    const expected = stored.filter((_, i) => i % 125 === 0).sort();
    assert.deepEqual([...(await findPresent(backend, asked))].sort(), expected);
    // A budget of 8 pages of 1,000 keys covers all 5,000 keys: no HEAD at all.
    assert.ok(backend.pages >= 1 && backend.pages <= Math.ceil(asked.length / 8), `${backend.pages} pages`);
    assert.equal(backend.heads, 0);

    const few = new PagedBackend(dir);
    const sorted = [...stored].sort();
    // 32 paths spread over all 5,000 keys: 4 pages list 4,000 keys, the paths past them get HEADs.
    const spread = sorted.filter((_, i) => i % 157 === 0).slice(0, 32);
    assert.equal(spread.length, 32);
    assert.deepEqual([...(await findPresent(few, spread))].sort(), spread);
    assert.equal(few.pages, 4);
    assert.ok(few.heads > 0 && few.heads < 32, `${few.heads} HEADs`);
  });

  it('on file://, which reads its whole directory to list it, asks one HEAD (a stat) each however many paths', async () => {
    const backend = new CountingBackend(dir);
    const asked = [...stored.filter((_, i) => i % 10 === 0), ...absent]; // 500 + 100 paths
    const expected = stored.filter((_, i) => i % 10 === 0).sort();
    assert.deepEqual([...(await findPresent(backend, asked))].sort(), expected);
    assert.deepEqual([backend.heads, backend.pages], [asked.length, 0]);
  });
});
