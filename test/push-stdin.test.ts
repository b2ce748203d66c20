/**
 * `cachectl push --stdin`, the way a CI driver uses it: paths written one by one as builds finish, each answered
 * by a JSON line once its closure is in the cache; lines that come together go up as one batch; a bad line fails
 * alone; the exit status says whether any failed. On file:// and on s3rver, checked by `nix store verify`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import type { StdinPushLine } from '../src/cli/push.js';
import {
  buildFixtures,
  CACHECTL,
  newKey,
  nixVerify,
  requireNix,
  stopWhenDone,
  tempDir,
  testEnv,
  withNix,
} from './helpers/nix.js';
import { startTestS3, useS3Here } from './helpers/s3rver.js';

for (const target of ['file', 's3'] as const) {
  describe(withNix(`cachectl push --stdin to ${target}://`), () => {
    // A line lost on the way leaves the reader waiting: bounded well below the suite's timeout.
    it(
      'answers each path as it is published, batches lines read together, fails a bad line alone',
      { timeout: 120_000 },
      async () => {
        requireNix();
        const s3 = target === 's3' ? await startTestS3() : undefined;
        if (s3 !== undefined) {
          useS3Here(s3);
          stopWhenDone(() => void s3.stop());
        }
        const cacheUrl = s3?.cacheUrl() ?? `file://${tempDir('stdin-cache')}`;
        const key = await newKey(`stdin-${target}-1`);
        const paths = await buildFixtures(['tiny', 'app', 'symroot'], { nonce: `stdin-${target}-${Date.now()}` });
        const child = spawn(
          process.execPath,
          [CACHECTL, 'push', '--stdin', '--to', cacheUrl, '--secret-key-file', key.secretFile],
          { env: testEnv(s3?.env ?? {}), stdio: ['pipe', 'pipe', 'pipe'] },
        );
        stopWhenDone(() => child.kill('SIGKILL'));
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        const exited = once(child, 'exit');
        const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
        const answers = async (count: number): Promise<StdinPushLine[]> => {
          const read: StdinPushLine[] = [];
          while (read.length < count) {
            const next = await lines.next();
            assert.notEqual(next.done, true, `cachectl ended after ${read.length} of ${count} lines: ${stderr}`);
            read.push(JSON.parse(next.value as string) as StdinPushLine);
          }
          return read;
        };

        // One path: answered before the next is written.
        child.stdin.write(`${paths.tiny}\n`);
        const [first] = await answers(1);
        assert.deepEqual(
          { ...first, seconds: 0 },
          {
            input: paths.tiny,
            path: paths.tiny,
            batch: 1,
            seconds: 0,
            ok: true,
            state: 'uploaded',
          },
        );
        assert.ok(first !== undefined && first.seconds >= 0 && first.seconds < 600);

        // Lines written at once form one batch: the path already there, a closure of two, and a symlink path.
        child.stdin.write(`${paths.tiny}\n${paths.app}\n\n${paths.symroot}\n`);
        const second = await answers(3);
        assert.deepEqual(
          second
            .map(({ path, batch, ok }) => ({ path, batch, ok }))
            .sort((a, b) => ((a.path ?? '') < (b.path ?? '') ? -1 : 1)),
          [paths.tiny, paths.app, paths.symroot].sort().map((path) => ({ path, batch: 2, ok: true })),
        );
        const stateOf = (path: string) => second.find((line) => line.path === path && line.ok);
        assert.deepEqual(
          [stateOf(paths.tiny), stateOf(paths.app), stateOf(paths.symroot)].map((line) => line?.ok && line.state),
          ['present', 'uploaded', 'uploaded'],
        );

        // A line that is no store path, and one no longer (or never) in the local store, fail alone.
        const absent = `/nix/store/${'0'.repeat(32)}-never-built`;
        child.stdin.write(`/tmp\n${absent}\n`);
        const failed = await answers(2);
        assert.deepEqual(
          failed.map((line) => ({ input: line.input, batch: line.batch, code: line.ok ? 'ok' : line.code })),
          [
            { input: '/tmp', batch: 3, code: 'PATH_NOT_IN_STORE' },
            { input: absent, batch: 3, code: 'PATH_NOT_VALID' },
          ],
        );
        child.stdin.end();
        const [code] = (await exited) as [number];
        assert.equal(code, 1, stderr);
        assert.match(stderr, /6 paths from stdin, 2 failed/);

        const verify = await nixVerify(s3?.nixUrl() ?? cacheUrl, key.publicKey, [paths.tiny, paths.app, paths.symroot]);
        assert.equal(verify.code, 0, verify.stderr);
      },
    );
  });
}
