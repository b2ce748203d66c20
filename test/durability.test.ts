/**
 * A file:// cache survives a power loss with no narinfo whose NAR or listing is missing: each file is flushed
 * before it is renamed into place, and its directory after, all before the narinfo's own rename. Watched with
 * strace, which shows the system calls in the order they happened (a test cannot cut the power).
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
      'trace=fdatasync,fsync,rename',
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
  it('flushes the NAR, the listing and their directories before the narinfo is renamed into place', async () => {
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
    const synced = (path: string, after: number, before: number) =>
      trace.some(
        (call) =>
          (call.name === 'fsync' || call.name === 'fdatasync') &&
          call.paths[0] === path &&
          call.start > after &&
          call.end < before,
      );
    for (const path of [tree, big]) {
      const hashPart = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const narinfo = renameTo(join(dir, `${hashPart}.narinfo`));
      const narUrl = /^URL: (.*)$/m.exec(readFileSync(join(dir, `${hashPart}.narinfo`), 'utf8'))?.[1] ?? '';
      const nar = renameTo(join(dir, narUrl));
      const listing = renameTo(join(dir, `${hashPart}.ls`));
      for (const file of [nar, listing, narinfo]) {
        const [temp = '', target = ''] = file.paths;
        assert.ok(synced(temp, -1, file.start), `${temp} flushed before it became ${target}`);
      }
      for (const file of [nar, listing]) {
        const target = file.paths[1] ?? '';
        const parent = target.slice(0, target.lastIndexOf('/'));
        assert.ok(synced(parent, file.end, narinfo.start), `${parent} flushed after ${target}, before the narinfo`);
      }
      assert.ok(synced(dir, narinfo.end, Infinity), 'the narinfo rename flushed too');
    }

    // ?fsync=false: a scratch cache, nothing flushed.
    const scratch = tempDir('scratch-cache');
    const fast = await tracedPush(`file://${scratch}?fsync=false`, tree);
    const hashPart = tree.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    assert.deepEqual(
      fast.filter((call) => call.name !== 'rename').map((call) => call.paths[0]),
      [],
      'no flushes',
    );
    assert.ok(fast.some((call) => call.name === 'rename' && call.paths[1] === join(scratch, `${hashPart}.narinfo`)));
  });
});
