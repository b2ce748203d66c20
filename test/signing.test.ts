/**
 * Signing beside key files: an external signer (`--signer-command`, here a real program holding a key cachectl
 * never reads) whose every signature is checked before use, and a key rotation as docs/operating.md tells it,
 * with Nix trusting the old key, the new one, or both (`nix store verify`).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  buildFixtures,
  cachectl,
  newKey,
  nixVerify,
  REPO,
  requireNix,
  run,
  tempDir,
  testEnv,
  withNix,
} from './helpers/nix.js';

const SIGNER = join(REPO, 'dist/test/fixtures/signer.js');
const hashPartOf = (path: string) => path.slice('/nix/store/'.length, '/nix/store/'.length + 32);

function signerCommand(keyFile: string, mode = ''): string {
  return `'${process.execPath}' '${SIGNER}' '${keyFile}' ${mode}`;
}

/** Sig lines of a path's narinfo in a file:// cache. */
function sigsOf(dir: string, path: string): string[] {
  const text = readFileSync(join(dir, `${hashPartOf(path)}.narinfo`), 'utf8');
  return [...text.matchAll(/^Sig: ([^:]+):/gm)].map((match) => match[1] ?? '');
}

async function push(args: string[]) {
  const result = await cachectl(['push', '--json', ...args], testEnv());
  return {
    code: result.code,
    stderr: result.stderr,
    ...(JSON.parse(result.stdout || '{}') as {
      failed?: { path: string; code: string; message: string; retryable: boolean }[];
    }),
  };
}

describe(withNix('signing'), () => {
  it('signs through an external signer, checking each signature; a broken signer publishes nothing', async () => {
    requireNix();
    const hsm = await newKey('signing-hsm-1');
    const dir = tempDir('signer-cache');
    const { app, lib, tiny } = await buildFixtures(['app', 'lib', 'tiny'], { nonce: `signer-${Date.now()}` });
    const good = await push([
      '--to',
      `file://${dir}`,
      '--signer-command',
      signerCommand(hsm.secretFile),
      '--trusted-public-key',
      hsm.publicKey,
      app,
    ]);
    assert.equal(good.code, 0, good.stderr);
    assert.deepEqual(sigsOf(dir, app), ['signing-hsm-1']);
    const verified = await nixVerify(`file://${dir}`, hsm.publicKey, [app, lib]);
    assert.equal(verified.code, 0, verified.stderr);

    // A signer whose signatures do not verify, and one that exits: the path fails, nothing unsigned goes up.
    const other = await newKey('signing-other-1');
    for (const [mode, trusted, why] of [
      ['wrong', hsm.publicKey, /does not verify against the --trusted-public-key of signing-hsm-1/],
      ['', other.publicKey, /not NAME:SIGNATURE by a key of --trusted-public-key \(signing-other-1\)/],
      ['exit', hsm.publicKey, /it exited \(status 3\); it said: the HSM is unplugged/],
    ] as const) {
      const bad = await push([
        '--to',
        `file://${dir}`,
        '--signer-command',
        signerCommand(hsm.secretFile, mode),
        '--trusted-public-key',
        trusted,
        tiny,
      ]);
      assert.equal(bad.code, 1, `${mode}: ${bad.stderr}`);
      assert.deepEqual(
        bad.failed?.map((failure) => [failure.path, failure.code]),
        [[tiny, 'SIGNER_FAILED']],
      );
      assert.match(bad.failed?.[0]?.message ?? '', why);
      assert.equal(bad.failed?.[0]?.retryable, mode === 'exit');
      assert.equal((await run('test', ['-e', join(dir, `${hashPartOf(tiny)}.narinfo`)])).code, 1, 'not published');
    }

    // verify --repair signs through the signer too: app's NAR deleted, app uploaded again, signed by it.
    const appNarinfo = readFileSync(join(dir, `${hashPartOf(app)}.narinfo`), 'utf8');
    await run('rm', [join(dir, /^URL: (.*)$/m.exec(appNarinfo)?.[1] ?? 'missing')]);
    const repaired = await cachectl(
      [
        'verify',
        '--to',
        `file://${dir}`,
        '--repair',
        '--signer-command',
        signerCommand(hsm.secretFile),
        '--trusted-public-key',
        hsm.publicKey,
      ],
      testEnv(),
    );
    assert.equal(repaired.code, 0, repaired.stderr);
    assert.match(repaired.stdout, /nar-missing: 1/);
    assert.deepEqual(sigsOf(dir, app), ['signing-hsm-1']);
    assert.equal((await nixVerify(`file://${dir}`, hsm.publicKey, [app])).code, 0);

    const missingKey = await cachectl(['push', '--to', `file://${dir}`, '--signer-command', 'true', tiny], testEnv());
    assert.equal(missingKey.code, 1);
    assert.match(missingKey.stderr, /signer-command needs trusted-public-key NAME:KEY/);
  });

  it('rotates a key: sign with both, re-sign what only the old one signed, then drop the old', async () => {
    requireNix();
    const oldKey = await newKey('signing-rotate-1');
    const newKey2 = await newKey('signing-rotate-2');
    const dir = tempDir('rotate-cache');
    const url = `file://${dir}`;
    const nonce = `rotate-${Date.now()}`;
    const { tiny: before } = await buildFixtures(['tiny'], { nonce: `${nonce}-a` });
    const { lib: during } = await buildFixtures(['lib'], { nonce: `${nonce}-b` });
    const { symroot: after } = await buildFixtures(['symroot'], { nonce: `${nonce}-c` });
    const trusting = async (key: { publicKey: string }, paths: string[]) =>
      (await nixVerify(url, key.publicKey, paths)).code;

    // Before: the old key alone.
    assert.equal((await push(['--to', url, '--secret-key-file', oldKey.secretFile, before])).code, 0);
    // 1. Sign with both; clients are told to trust both.
    const both = ['--secret-key-file', oldKey.secretFile, '--secret-key-file', newKey2.secretFile];
    assert.equal((await push(['--to', url, ...both, during])).code, 0);
    assert.deepEqual(sigsOf(dir, during).sort(), ['signing-rotate-1', 'signing-rotate-2']);
    assert.equal(await trusting(oldKey, [before, during]), 0);
    assert.equal(await trusting(newKey2, [during]), 0);
    assert.notEqual(await trusting(newKey2, [before]), 0, 'signed by the old key only');

    // 2. Re-sign what the new key has not signed: verify names it, --repair signs it again with both.
    const repair = await cachectl(
      ['verify', '--json', '--to', url, '--trusted-public-key', newKey2.publicKey, '--repair', ...both],
      testEnv(),
    );
    assert.equal(repair.code, 0, repair.stderr);
    const report = JSON.parse(repair.stdout) as {
      report: { byKind: Record<string, number> };
      repair: { uploaded: string[] };
    };
    assert.equal(report.report.byKind['signature-untrusted'], 1);
    assert.deepEqual(report.repair.uploaded, [before]);
    assert.equal(await trusting(newKey2, [before, during]), 0);
    assert.equal(await trusting(oldKey, [before, during]), 0, 'the old signatures stay until the old key goes');

    // 3. Drop the old key: new paths carry the new signature only, which clients trusting the old key refuse.
    assert.equal((await push(['--to', url, '--secret-key-file', newKey2.secretFile, after])).code, 0);
    assert.deepEqual(sigsOf(dir, after), ['signing-rotate-2']);
    assert.equal(await trusting(newKey2, [before, during, after]), 0);
    assert.notEqual(await trusting(oldKey, [after]), 0);
  });
});
