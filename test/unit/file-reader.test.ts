import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { FileBackend } from '../../src/cache/file.js';
import { CachectlError } from '../../src/core/errors.js';
import { tempDir } from '../helpers/nix.js';

const execFileAsync = promisify(execFile);

describe("a file:// cache's batched reads (getMany, for the GC)", () => {
  it('reads every file in order in worker threads, undefined for a missing one, in batches of any size', async () => {
    const dir = tempDir('get-many');
    // Sizes from empty to beyond Node's 8 KiB buffer pool, so that both kinds of buffer cross the thread boundary.
    const bodies = Array.from({ length: 1200 }, (_, i) => Buffer.alloc((i * 37) % 9000, String(i % 10)));
    for (const [i, body] of bodies.entries()) writeFileSync(join(dir, `k${i}.narinfo`), body);
    const backend = new FileBackend(dir);
    try {
      const keys = bodies.map((_, i) => `k${i}.narinfo`);
      const asked = [...keys.slice(0, 600), 'missing.narinfo', ...keys.slice(600)];
      const [all, none, some] = await Promise.all([
        backend.getMany(asked),
        backend.getMany([]),
        backend.getMany(['k7.narinfo', 'k7.narinfo', 'missing.narinfo']),
      ]);
      assert.equal(all.length, asked.length);
      assert.equal(all[600], undefined);
      for (const [i, body] of bodies.entries()) assert.deepEqual(all[i < 600 ? i : i + 1], body, `k${i}.narinfo`);
      assert.deepEqual(none, []);
      assert.deepEqual(some, [bodies[7], bodies[7], undefined]);
    } finally {
      await backend.close();
    }
  });

  it('fails naming the key when a file cannot be read, as get does', async () => {
    const dir = tempDir('get-many-failure');
    writeFileSync(join(dir, 'a.narinfo'), 'a');
    mkdirSync(join(dir, 'b.narinfo')); // a directory: EISDIR
    const backend = new FileBackend(dir);
    try {
      await assert.rejects(backend.getMany(['a.narinfo', 'b.narinfo']), (err: unknown) => {
        assert.ok(err instanceof CachectlError);
        assert.match(err.message, /b\.narinfo: EISDIR/);
        return true;
      });
      assert.deepEqual(await backend.getMany(['a.narinfo']), [Buffer.from('a')], 'the readers still read after it');
    } finally {
      await backend.close();
    }
  });

  it('lets the process exit once its reads are answered, even unclosed', async () => {
    const dir = tempDir('get-many-exit');
    writeFileSync(join(dir, 'a.narinfo'), 'read');
    const module = new URL('../../src/cache/file.js', import.meta.url).href;
    const script = join(dir, 'read.mjs');
    writeFileSync(
      script,
      `const { FileBackend } = await import(${JSON.stringify(module)});\n` +
        `const [body] = await new FileBackend(${JSON.stringify(dir)}).getMany(['a.narinfo']);\n` +
        `console.log(body.toString());\n`,
    );
    // Were an idle reader to hold the process, this would time out instead.
    const { stdout } = await execFileAsync(process.execPath, [script], { timeout: 60_000 });
    assert.equal(stdout.trim(), 'read');
  });
});
