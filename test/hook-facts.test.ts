import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseStorePath } from '../src/core/store-path.js';
import { LocalStore } from '../src/nix/local-store.js';
import { resolveConfig } from '../src/core/config.js';
import { DEFAULT_QUEUE, ENV_NAMES } from '../src/core/options.js';
import { HOOK_INBOXES, hookInboxFiles } from '../src/queue/schema.js';
import { readSpool, spoolDirOf } from '../src/queue/spool.js';
import { HOOK } from './helpers/daemon.js';
import { runHook } from './helpers/hook.js';
import { buildFixtures, requireNix, run, tempDir, testEnv, withNix } from './helpers/nix.js';

// hook/post-build-hook is shell, and copies facts from the TypeScript: the queue's files and environment, the
// number of inbox files, the store path grammar, the query for a derivation's outputs and the spool's lines.
// These tests run the hook's own code against the TypeScript's, so a change to one side that the other lacks
// fails here.
const hookSource = readFileSync(HOOK, 'utf8');

/** A part of the hook's source, found by a pattern that must match exactly once. */
function hookPart(pattern: RegExp): string {
  const matches = [...hookSource.matchAll(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`))];
  assert.equal(matches.length, 1, `the hook has ${matches.length} parts matching ${pattern}`);
  return matches[0]?.[0] ?? '';
}

const HASH = '0123456789abcdfghijklmnpqrsvwxyz';
const STORE = '/nix/store';

/** Store path candidates: valid ones and every way the grammar can be broken. */
function candidates(): string[] {
  const hash = HASH;
  const fixed = [
    `${STORE}/${hash}-hello-2.12`,
    `${STORE}/${hash}-a`,
    `${STORE}/${hash}-${'n'.repeat(211)}`,
    `${STORE}/${hash}-${'n'.repeat(212)}`,
    `${STORE}/${hash}-+-._?=`,
    `${STORE}/${hash}-.hidden`,
    `${STORE}/${hash}-.gitignore`,
    `${STORE}/${hash}-...`,
    `${STORE}/${hash}-..a`,
    `${STORE}/${hash}-.`,
    `${STORE}/${hash}-..`,
    `${STORE}/${hash}-.-x`,
    `${STORE}/${hash}-..-x`,
    `${STORE}/${hash}-x.-`,
    `${STORE}/${hash}-`,
    `${STORE}/${hash}`,
    `${STORE}/${hash.slice(1)}-short-hash`,
    `${STORE}/${hash}x-long-hash`,
    `${STORE}/${hash.replace('0', 'e')}-e-is-not-nix32`,
    `${STORE}/${hash.replace('0', 'A')}-upper`,
    `${STORE}/${hash}-with space`,
    `${STORE}/${hash}-with/sub`,
    `${STORE}/${hash}-quote'`,
    `${STORE}/${hash}-dollar$x`,
    `${STORE}/${hash}-star*`,
    `${STORE}//${hash}-double-slash`,
    `/nix/other/${hash}-elsewhere`,
    `${hash}-relative`,
    '',
  ];
  // Random names over an alphabet with the allowed characters and a few others.
  let seed = 7;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const alphabet = 'aZ9+-._?=. /!\'"\\$`*[]~';
  const fuzzed = Array.from({ length: 300 }, () => {
    const name = Array.from(
      { length: 1 + Math.floor(random() * 6) },
      () => alphabet[Math.floor(random() * alphabet.length)],
    ).join('');
    return `${STORE}/${hash}-${name}`;
  });
  return [...fixed, ...fuzzed];
}

describe(withNix("the hook's copies of the TypeScript's facts"), () => {
  it('picks one of HOOK_INBOXES inbox files by its pid', () => {
    const pick = hookPart(/^inbox=\$queue\.inbox\/\$\(\(\$\$ % (\d+)\)\)\.db$/m);
    assert.equal(Number(/% (\d+)/.exec(pick)?.[1]), HOOK_INBOXES);
  });

  it('reads the queue and the GC roots from the environment names and defaults the TypeScript uses', () => {
    const queue = hookPart(/^queue=\$\{(\w+):-([^}]+)\}$/m);
    assert.equal(queue, `queue=\${${ENV_NAMES.queue}:-${DEFAULT_QUEUE}}`);
    const roots = hookPart(/^gc_roots=\$\{(\w+):-([^}]+)\}$/m);
    assert.equal(roots, `gc_roots=\${${ENV_NAMES.gcRoots}:-$state/gcroots/cachectl}`);
    assert.equal(hookPart(/^state=.*$/m), 'state=${NIX_STATE_DIR:-/nix/var/nix}');
    assert.equal(resolveConfig({}, { NIX_STATE_DIR: '/state' }).gcRoots, '/state/gcroots/cachectl');
    assert.equal(resolveConfig({}, {}).gcRoots, '/nix/var/nix/gcroots/cachectl');
    // The spool and the inbox files beside the queue, named as the daemon names them.
    assert.equal(hookPart(/^spool=.*$/m), 'spool=$queue.spool');
    assert.equal(spoolDirOf('Q'), 'Q.spool');
    assert.ok(hookInboxFiles('Q').every((file, n) => file === `Q.inbox/${n}.db`));
  });

  it('accepts exactly the store paths parseStorePath accepts', () => {
    const isStorePath = hookPart(/^is_store_path\(\) \{\n[\s\S]*?\n\}$/m);
    const paths = candidates();
    // One shell for every candidate: the hook's function, then a line per answer.
    const script =
      `${isStorePath}\nstore=${STORE}\nwhile IFS= read -r path; do if is_store_path "$path"; then echo ` +
      `1; else echo 0; fi; done\n`;
    const answers = execFileSync('sh', ['-c', script], { input: `${paths.join('\n')}\n`, encoding: 'utf8' })
      .trim()
      .split('\n');
    assert.equal(answers.length, paths.length);
    const disagreements = paths.flatMap((path, i) => {
      let accepted: boolean;
      try {
        parseStorePath(path, STORE);
        accepted = true;
      } catch {
        accepted = false;
      }
      return (answers[i] === '1') === accepted
        ? []
        : [`${JSON.stringify(path)}: hook ${answers[i]}, TypeScript ${accepted ? 1 : 0}`];
    });
    assert.deepEqual(disagreements, []);
    assert.ok(answers.includes('1') && answers.includes('0'), 'the candidates include valid and invalid paths');
  });

  it("reads a derivation's valid outputs from the Nix database as LocalStore does", async () => {
    requireNix();
    const { 'multi.out': multi, tiny } = await buildFixtures(['multi.out', 'tiny'], { nonce: `facts-${Date.now()}` });
    const store = new LocalStore();
    try {
      for (const output of [multi, tiny]) {
        const deriver = (await run('nix-store', ['-q', '--deriver', output])).stdout.trim();
        const query = hookPart(/^drv_outputs="[\s\S]*?"$/m);
        const sql = execFileSync('sh', ['-c', `DRV_PATH='${deriver}'\n${query}\nprintf '%s' "$drv_outputs"`], {
          encoding: 'utf8',
        });
        const fromHook = execFileSync(
          'sqlite3',
          ['-readonly', '-batch', '-init', '/dev/null', '/nix/var/nix/db/db.sqlite', sql],
          { encoding: 'utf8' },
        );
        const expected = store.queryDerivationOutputs(deriver);
        assert.ok(expected.includes(output), `${deriver} has the output ${output}`);
        assert.deepEqual(fromHook.trim().split('\n').sort(), [...expected].sort(), deriver);
      }
    } finally {
      store.close();
    }
  });

  it('writes spool lines readSpool reads: out for a built path, drv for a derivation it cannot resolve', async () => {
    const queue = join(tempDir('facts-queue'), 'queue.db');
    const env = testEnv({ CACHECTL_QUEUE: queue, CACHECTL_GC_ROOTS: tempDir('facts-roots') });
    const out = `${STORE}/${HASH}-built`;
    const drv = `${STORE}/${HASH.replace('0', '1')}-unknown.drv`;
    assert.equal((await runHook(env, { OUT_PATHS: out })).code, 0);
    assert.equal((await runHook(env, { DRV_PATH: drv })).code, 0);
    const spool = readSpool(spoolDirOf(queue));
    assert.deepEqual(spool.problems, []);
    assert.deepEqual(spool.entries.map((entry) => `${entry.kind} ${entry.path}`).sort(), [`drv ${drv}`, `out ${out}`]);
  });
});
