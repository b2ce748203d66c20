/**
 * A file:// cache survives a power loss with no narinfo whose NAR or listing is missing: the file system is
 * flushed (syncfs, by coreutils' `sync -f`) after the NAR and the listing are renamed into place and the narinfo
 * is written, and before the narinfo's own rename, and once more before the push ends. Watched with strace, which
 * shows the system calls in the order they happened, the `sync` child's too (a test cannot cut the power).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildFixtures, CACHECTL, requireNix, run, tempDir, testEnv, withNix } from './helpers/nix.js';

interface Call {
  name: string;
  /** the paths it names: the files of its fds (strace -y), the names it renames */
  paths: string[];
  /** where it began and ended in the trace */
  start: number;
  end: number;
}

/** The calls of an `strace -f -y` log, each with where it began and where it returned. */
function calls(log: string): Call[] {
  const all: Call[] = [];
  const pending = new Map<string, Call>();
  log.split('\n').forEach((line, index) => {
    // strace 7 pads the pid to five columns: "9468  rename(…" beside "23309 rename(…"
    const match = /^(\d+) +(?:<\.\.\. (\w+) resumed>|(\w+)\((.*))/.exec(line);
    if (match === null) return;
    const [, pid = '', resumed, name, args = ''] = match;
    if (resumed !== undefined) {
      const call = pending.get(pid);
      if (call !== undefined) call.end = index;
      pending.delete(pid);
      return;
    }
    const paths = [...args.matchAll(/<([^>]+)>|"([^"]+)"/g)].map((m) => m[1] ?? m[2] ?? '');
    const call: Call = { name: name ?? '', paths, start: index, end: index };
    if (line.endsWith('<unfinished ...>')) pending.set(pid, call);
    all.push(call);
  });
  return all;
}

async function tracedPush(url: string, ...paths: string[]): Promise<Call[]> {
  const trace = join(tempDir('strace'), 'trace');
  const result = await run(
    'strace',
    [
      '-f',
      '-y',
      '-qq',
      '-e',
      'trace=syncfs,rename,close',
      '-o',
      trace,
      process.execPath,
      CACHECTL,
      'push',
      '--to',
      url,
      ...paths,
    ],
    testEnv(),
  );
  assert.equal(result.code, 0, `strace or push failed (strace comes with bash test/setup.sh): ${result.stderr}`);
  return calls(readFileSync(trace, 'utf8'));
}

describe(withNix('file:// durability'), () => {
  it('flushes the NAR, the listing and the narinfo before the narinfo is renamed into place', async () => {
    requireNix();
    // tree's NAR goes up whole, big's streamed
    const { tree, big } = await buildFixtures(['tree', 'big'], { nonce: `durability-${Date.now()}` });
    const dir = tempDir('durable-cache');
    const trace = await tracedPush(`file://${dir}`, tree, big);
    const renameTo = (target: string) => {
      const found = trace.filter((call) => call.name === 'rename' && call.paths[1] === target);
      assert.equal(found.length, 1, `one rename to ${target}: ${JSON.stringify(found)}`);
      return found[0] as Call;
    };
    const flushes = trace.filter((call) => call.name === 'syncfs');
    assert.ok(
      flushes.every((call) => call.paths[0] === dir),
      `each syncfs is of the cache's file system: ${JSON.stringify(flushes)}`,
    );
    const flushedBetween = (after: number, before: number) =>
      flushes.some((call) => call.start > after && call.end < before);
    for (const path of [tree, big]) {
      const hashPart = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const narinfo = renameTo(join(dir, `${hashPart}.narinfo`));
      const narUrl = /^URL: (.*)$/m.exec(readFileSync(join(dir, `${hashPart}.narinfo`), 'utf8'))?.[1] ?? '';
      const nar = renameTo(join(dir, narUrl));
      const listing = renameTo(join(dir, `${hashPart}.ls`));
      // the narinfo's temp file closed once written
      const written = trace.findLast(
        (call) => call.name === 'close' && call.paths[0] === narinfo.paths[0] && call.end < narinfo.start,
      );
      assert.ok(written !== undefined, `the narinfo's temp file ${narinfo.paths[0]} is written before its rename`);
      assert.ok(
        flushedBetween(Math.max(nar.end, listing.end, written.end), narinfo.start),
        'a flush after the NAR and the listing are in place and the narinfo written, before its rename',
      );
      assert.ok(flushedBetween(narinfo.end, Infinity), 'a flush after the narinfo rename');
    }

    // ?fsync=false: a scratch cache, nothing flushed.
    const scratch = tempDir('scratch-cache');
    const fast = await tracedPush(`file://${scratch}?fsync=false`, tree);
    const hashPart = tree.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    assert.deepEqual(
      fast.filter((call) => call.name === 'syncfs'),
      [],
      'no flushes',
    );
    assert.ok(fast.some((call) => call.name === 'rename' && call.paths[1] === join(scratch, `${hashPart}.narinfo`)));
  });
});
