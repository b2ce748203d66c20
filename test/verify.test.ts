/**
 * `cachectl verify` and `--repair` on buckets broken in every way a reader can meet, on file:// and on s3rver:
 * each breakage is reported under its kind, the repair uploads again what the local store has, names what it does
 * not, and Nix itself (`nix store verify -r`, substitution into a fresh store) then accepts the repaired closures.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { parseNarInfo, renderNarInfo } from '../src/core/narinfo.js';
import {
  buildTraceFingerprint,
  parseBuildTrace,
  parseRealisation,
  type Realisation,
  realisationFingerprint,
  renderBuildTrace,
  renderRealisation,
} from '../src/core/realisation.js';
import { fingerprint, parseSecretKey, sign } from '../src/core/signing.js';
import type { CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import type { ProblemKind } from '../src/verify/verify.js';
import type { VerifyCommandResult } from '../src/cli/verify.js';
import { dropLeases, putNarInfoChain } from './helpers/cache.js';
import {
  buildDag,
  buildFixtures,
  cachectl,
  newKey,
  nixClosure,
  nixCopyFrom,
  nixVerify,
  requireNix,
  run,
  tempDir,
  testEnv,
  type Key,
  withNix,
} from './helpers/nix.js';
import { startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';

const hashPartOf = (path: string) => path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
const CA_FIXTURES = new URL('../../test/fixtures/content-addressed.nix', import.meta.url).pathname;
const narInfoKey = (path: string) => `${hashPartOf(path)}.narinfo`;

async function narInfoOf(backend: CacheBackend, path: string) {
  const body = await backend.get(narInfoKey(path));
  assert.ok(body !== undefined, `${path} has a narinfo`);
  return parseNarInfo(body.toString('utf8'), narInfoKey(path));
}

async function verify(args: string[], env: NodeJS.ProcessEnv) {
  const result = await cachectl(['verify', '--json', ...args], env);
  assert.ok(result.code === 0 || result.code === 1, `verify ran: ${result.stderr}`);
  return { code: result.code, result: JSON.parse(result.stdout) as VerifyCommandResult };
}

/** The non-zero counts of a report, by kind. */
function counts(byKind: Record<ProblemKind, number>): Partial<Record<ProblemKind, number>> {
  return Object.fromEntries(Object.entries(byKind).filter(([, count]) => count > 0));
}

for (const target of ['file', 's3'] as const) {
  describe(withNix(`cachectl verify on ${target}://`), () => {
    let s3: S3Server | undefined;
    let cacheUrl: string;
    let nixUrl: string;
    let env: NodeJS.ProcessEnv;
    let backend: CacheBackend;
    let trusted: Key;
    let untrusted: Key;
    before(async () => {
      requireNix();
      trusted = await newKey(`verify-${target}-1`);
      untrusted = await newKey(`verify-${target}-other-1`);
      if (target === 's3') {
        s3 = await startTestS3();
        useS3Here(s3);
        cacheUrl = s3.cacheUrl();
        nixUrl = s3.nixUrl();
      } else {
        cacheUrl = `file://${tempDir('verify-cache')}`;
        nixUrl = cacheUrl;
      }
      env = testEnv(s3?.env ?? {});
      backend = await openCache(parseCacheUrl(cacheUrl));
    });
    after(async () => {
      await backend.close();
      await s3?.stop();
    });

    it('reports each of a dozen breakages by kind, repairs what the local store has, and Nix accepts the result', async () => {
      const nonce = `verify-${target}-${Date.now()}`;
      const paths = await buildFixtures(
        ['tiny', 'lib', 'app', 'top', 'multi.out', 'multi.dev', 'tree', 'listed', 'symroot', 'execroot'],
        { nonce },
      );
      // A path with a NAR of its own (tiny's content, and so its NAR, is the same whatever the nonce).
      const [tinyToo] = (await buildDag(nonce, 1)) as [string];
      const all = [...Object.values(paths), tinyToo];
      const pushed = await cachectl(['push', '--to', cacheUrl, '--secret-key-file', trusted.secretFile, ...all], env);
      assert.equal(pushed.code, 0, pushed.stderr);
      // Verify sees what a reader sees: leases of finished pushes would hide orphan listings as in flight.
      await dropLeases(backend);
      const keyArgs = ['--to', cacheUrl, '--trusted-public-key', trusted.publicKey];
      const clean = await verify([...keyArgs, '--deep'], env);
      assert.equal(clean.code, 0, JSON.stringify(clean.result.report.problems));
      assert.equal(clean.result.report.checked.narinfos, (await nixClosure(all)).length);
      assert.ok(clean.result.report.checked.narBytesRead > 0);

      // 1. a deleted NAR
      await backend.delete([(await narInfoOf(backend, paths.tiny)).url]);
      // 2. a truncated NAR
      const treeNar = (await narInfoOf(backend, paths.tree)).url;
      const treeBody = (await backend.get(treeNar)) as Buffer;
      await backend.put(treeNar, treeBody.subarray(0, treeBody.length - 7), 'nar');
      // 3. a wrong FileSize
      const listed = await narInfoOf(backend, paths.listed);
      await backend.put(
        narInfoKey(paths.listed),
        Buffer.from(renderNarInfo({ ...listed, fileSize: (listed.fileSize ?? 0) + 1 })),
        'narinfo',
      );
      // 4. a missing reference: app and top refer to lib, whose listing is left behind
      await backend.delete([narInfoKey(paths.lib)]);
      // 5. a bad signature: one bit of it flipped
      const symroot = await narInfoOf(backend, paths.symroot);
      const [name, body] = (symroot.sigs[0] as string).split(':') as [string, string];
      const flipped = Buffer.from(body, 'base64');
      flipped[10] = (flipped[10] as number) ^ 1;
      await backend.put(
        narInfoKey(paths.symroot),
        Buffer.from(renderNarInfo({ ...symroot, sigs: [`${name}:${flipped.toString('base64')}`] })),
        'narinfo',
      );
      // 6. signed by an untrusted key only
      const execroot = await narInfoOf(backend, paths.execroot);
      const other = parseSecretKey(readFileSync(untrusted.secretFile, 'utf8'), untrusted.secretFile);
      const text = fingerprint(
        execroot.storePath,
        execroot.narHash.digest,
        execroot.narSize,
        execroot.references.map((ref) => `/nix/store/${ref}`),
      );
      await backend.put(
        narInfoKey(paths.execroot),
        Buffer.from(renderNarInfo({ ...execroot, sigs: [sign(other, text)] })),
        'narinfo',
      );
      // 7. a malformed narinfo
      const multiOut = await narInfoOf(backend, paths['multi.out']);
      const malformed = renderNarInfo(multiOut).replace(/^NarHash: .*\n/m, '');
      await backend.put(narInfoKey(paths['multi.out']), Buffer.from(malformed), 'narinfo');
      // 8. an orphan listing
      const orphan = `${'0'.repeat(31)}1.ls`;
      await backend.put(orphan, Buffer.from('{"version":1,"root":{"type":"regular","size":1}}'), 'listing');
      // 9. (--deep) another path's NAR in place of this one's, FileSize made to match: its FileHash tells
      const dev = await narInfoOf(backend, paths['multi.dev']);
      const foreign = (await backend.get((await narInfoOf(backend, tinyToo)).url)) as Buffer;
      await backend.put(dev.url, foreign, 'nar');
      await backend.put(
        narInfoKey(paths['multi.dev']),
        Buffer.from(renderNarInfo({ ...dev, fileSize: foreign.length })),
        'narinfo',
      );
      // 10. (--deep) a NAR cut off inside its zstd frame, FileSize and FileHash made to match
      const second = await narInfoOf(backend, tinyToo);
      const cut = foreign.subarray(0, foreign.length - 5);
      await backend.put(second.url, cut, 'nar');
      await backend.put(
        narInfoKey(tinyToo),
        Buffer.from(
          renderNarInfo({
            ...second,
            fileSize: cut.length,
            fileHash: { algorithm: 'sha256', digest: createHash('sha256').update(cut).digest() },
          }),
        ),
        'narinfo',
      );
      // 11. (--deep) a listing that is not JSON
      await backend.put(`${hashPartOf(paths.top)}.ls`, Buffer.from('{"version":1,'), 'listing');
      // 12. (--deep) a wrong FileHash, the NAR whole: what Nix checks (its NarHash) holds
      const app = await narInfoOf(backend, paths.app);
      await backend.put(
        narInfoKey(paths.app),
        Buffer.from(renderNarInfo({ ...app, fileHash: { algorithm: 'sha256', digest: Buffer.alloc(32, 7) } })),
        'narinfo',
      );
      // 13. paths the local store does not have: one unsigned, with a NAR not of its NarHash, whose reference is gone
      const gone = (await putNarInfoChain(backend, `verify-gone-${target}`, 2)).filter((key) =>
        key.endsWith('.narinfo'),
      );
      const goneInfos = await Promise.all(
        gone.map(async (key) => ({ key, info: parseNarInfo(((await backend.get(key)) as Buffer).toString(), key) })),
      );
      const referrerKey = goneInfos.find(({ info }) => info.references.length > 0)?.key as string;
      await backend.delete(gone.filter((key) => key !== referrerKey));

      const shallow = await verify(keyArgs, env);
      assert.equal(shallow.code, 1);
      // lib's narinfo is gone: its listing and its log are left, belonging to nothing
      const libLog = `log/${(await run('nix-store', ['-q', '--deriver', paths.lib])).stdout.trim().slice(11)}`;
      assert.deepEqual(counts(shallow.result.report.byKind), {
        'narinfo-malformed': 1,
        'nar-missing': 1,
        'nar-size-mismatch': 2,
        'reference-missing': 3,
        'signature-invalid': 1,
        'signature-untrusted': 2,
        'listing-orphan': 2,
        'log-orphan': 1,
      });
      const problemOf = (kind: ProblemKind, report = shallow.result.report) =>
        [...report.problems, ...report.warnings].filter((problem) => problem.kind === kind).map((p) => p.key);
      assert.deepEqual(problemOf('nar-missing'), [narInfoKey(paths.tiny)]);
      assert.deepEqual(
        problemOf('nar-size-mismatch').sort(),
        [narInfoKey(paths.tree), narInfoKey(paths.listed)].sort(),
      );
      assert.deepEqual(
        problemOf('reference-missing').sort(),
        [narInfoKey(paths.app), narInfoKey(paths.top), referrerKey].sort(),
      );
      assert.deepEqual(problemOf('signature-invalid'), [narInfoKey(paths.symroot)]);
      assert.deepEqual(problemOf('signature-untrusted').sort(), [narInfoKey(paths.execroot), referrerKey].sort());
      assert.deepEqual(problemOf('narinfo-malformed'), [narInfoKey(paths['multi.out'])]);
      // warnings: Nix reads on
      assert.deepEqual(
        shallow.result.report.warnings.map((warning) => warning.key).sort(),
        [orphan, `${hashPartOf(paths.lib)}.ls`, libLog].sort(),
      );
      const printed = await cachectl(['verify', ...keyArgs], env);
      assert.equal(printed.code, 1);
      assert.match(printed.stdout, /^10 problems \(Nix fails on them, or data is lost\):$/m);
      assert.match(printed.stdout, /^ {2}signature-untrusted: 2$/m);
      assert.match(printed.stdout, /its signature by verify-\S+-1 does not verify/);
      assert.match(printed.stdout, /^3 warnings \(Nix reads on; they count with --strict\):$/m);
      assert.match(printed.stdout, /^ {2}log-orphan: 1$/m);

      const deep = await verify([...keyArgs, '--deep'], env);
      assert.deepEqual(counts(deep.result.report.byKind), {
        ...counts(shallow.result.report.byKind),
        'nar-corrupt': 1,
        'nar-hash-mismatch': 2,
        'file-hash-mismatch': 1,
        'listing-malformed': 1,
      });
      const deepOf = (kind: ProblemKind) => problemOf(kind, deep.result.report).sort();
      assert.deepEqual(deepOf('nar-corrupt'), [narInfoKey(tinyToo)]);
      assert.deepEqual(deepOf('nar-hash-mismatch'), [narInfoKey(paths['multi.dev']), referrerKey].sort());
      assert.deepEqual(deepOf('file-hash-mismatch'), [narInfoKey(paths.app)]);
      assert.deepEqual(deepOf('listing-malformed'), [`${hashPartOf(paths.top)}.ls`]);
      assert.deepEqual(deep.result.report.warnings.map((warning) => warning.kind).sort(), [
        'file-hash-mismatch',
        'listing-malformed',
        'listing-orphan',
        'listing-orphan',
        'log-orphan',
      ]);

      // Nix agrees that these closures are broken before the repair.
      const before = await nixVerify(nixUrl, trusted.publicKey, [paths.top]);
      assert.notEqual(before.code, 0);

      // A repair takes on the problems: what Nix fails on.
      const signing = ['--secret-key-file', trusted.secretFile];
      const repaired = await verify([...keyArgs, '--deep', '--repair', ...signing], env);
      const repair = repaired.result.repair;
      assert.ok(repair !== undefined);
      assert.deepEqual(
        [...repair.uploaded].sort(),
        [
          paths.tiny,
          paths.tree,
          paths.listed,
          paths.lib,
          paths.symroot,
          paths.execroot,
          paths['multi.out'],
          paths['multi.dev'],
          tinyToo,
        ].sort(),
      );
      assert.deepEqual(repair.deleted, []);
      // What the local store lacks is named, problem by problem.
      assert.deepEqual(repair.unrepaired.map((entry) => entry.key).sort(), [referrerKey, referrerKey, referrerKey]);
      assert.ok(
        repair.unrepaired.every((entry) => /is not in the local store/.test(entry.why)),
        JSON.stringify(repair),
      );
      // lib is back, its listing and log with it; the warnings it was not asked to repair remain
      assert.deepEqual(counts(repair.after.byKind), {
        'nar-hash-mismatch': 1,
        'reference-missing': 1,
        'signature-untrusted': 1,
        'file-hash-mismatch': 1,
        'listing-orphan': 1,
        'listing-malformed': 1,
      });
      assert.equal(repaired.code, 1, 'problems remain');

      // With --strict the warnings count, and a repair takes them on too: the orphan listing is deleted, top
      // and app go up again.
      const strict = (await verify([...keyArgs, '--deep', '--repair', '--strict', ...signing], env)).result.repair;
      assert.ok(strict !== undefined);
      assert.deepEqual(strict.deleted, [orphan]);
      assert.deepEqual(strict.uploaded.sort(), [paths.top, paths.app].sort());
      assert.deepEqual(counts(strict.after.byKind), {
        'nar-hash-mismatch': 1,
        'reference-missing': 1,
        'signature-untrusted': 1,
      });

      const nixCheck = await nixVerify(nixUrl, trusted.publicKey, all);
      assert.equal(nixCheck.code, 0, nixCheck.stderr);
      const substituted = await nixCopyFrom(nixUrl, trusted.publicKey, [paths.top, paths['multi.dev'], tinyToo]);
      assert.equal(substituted.code, 0, substituted.stderr);
      const ls = await run('nix', ['store', 'ls', '--store', nixUrl, '-R', paths.top], env);
      assert.equal(ls.code, 0, ls.stderr);

      // Without the unrepairable paths the bucket is whole: exit 0, strict too.
      await backend.delete([referrerKey]);
      const whole = await verify([...keyArgs, '--deep', '--strict'], env);
      assert.deepEqual([whole.result.report.problems, whole.result.report.warnings], [[], []]);
      assert.equal(whole.code, 0);
    });

    it('reports broken realisations and build traces by kind, signs failing ones again, names the rest', async () => {
      // A cache of its own: the breakages above must not count here.
      const url =
        s3 === undefined ? `file://${tempDir('verify-realisations')}` : s3.cacheUrl(`realisations-${Date.now()}`);
      const cache = await openCache(parseCacheUrl(url));
      try {
        const [path] = (await buildDag(`verify-realisations-${target}-${Date.now()}`, 1)) as [string];
        const pushed = await cachectl(['push', '--to', url, '--secret-key-file', trusted.secretFile, path], env);
        assert.equal(pushed.code, 0, pushed.stderr);
        const own = parseSecretKey(readFileSync(trusted.secretFile, 'utf8'), trusted.secretFile);
        const other = parseSecretKey(readFileSync(untrusted.secretFile, 'utf8'), untrusted.secretFile);
        const signedBy = { own: (text: string) => [sign(own, text)], other: (text: string) => [sign(other, text)] };
        const id = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}!out`;
        const realisationKey = (n: number) => `realisations/${id(n)}.doi`;
        const putRealisation = (n: number, outPath: string, signer: (text: string) => string[]) => {
          const realisation: Realisation = { id: id(n), outPath, signatures: [], dependentRealisations: new Map() };
          const signatures = signer(realisationFingerprint(realisation));
          return cache.put(
            realisationKey(n),
            Buffer.from(renderRealisation({ ...realisation, signatures })),
            'realisation',
          );
        };
        // Nix 2.35's: keyed by the derivation's base name
        const drvOf = (n: number) => `${String(n).padStart(32, '0')}-verify-realisation.drv`;
        const traceKey = (n: number) => `build-trace-v2/${drvOf(n)}/out.doi`;
        const putTrace = (n: number, outPath: string, signer: (text: string) => string[]) => {
          const trace = { drvPath: drvOf(n), outputName: 'out', outPath };
          const signatures = signer(buildTraceFingerprint(trace));
          return cache.put(traceKey(n), Buffer.from(renderBuildTrace({ ...trace, signatures })), 'realisation');
        };
        const base = path.slice('/nix/store/'.length);
        const gone = '00000000000000000000000000000000-verify-realisation-gone';
        const flipped = (signer: (text: string) => string[]) => (text: string) =>
          signer(text).map((sig) => {
            const [name, body] = sig.split(':') as [string, string];
            const bytes = Buffer.from(body, 'base64');
            bytes[3] = (bytes[3] as number) ^ 1;
            return `${name}:${bytes.toString('base64')}`;
          });
        for (const put of [putRealisation, putTrace]) {
          await put(1, base, signedBy.own);
          await put(3, gone, signedBy.own);
          await put(4, base, flipped(signedBy.own));
          await put(5, base, signedBy.other);
        }
        await cache.put(realisationKey(2), Buffer.from('{"id": 1}'), 'realisation');
        await cache.put(traceKey(2), Buffer.from('{"outPath": 1}'), 'realisation');

        const keyArgs = ['--to', url, '--trusted-public-key', trusted.publicKey];
        const broken = await verify(keyArgs, env);
        assert.equal(broken.code, 1);
        assert.deepEqual([broken.result.report.checked.realisations, broken.result.report.checked.buildTraces], [5, 5]);
        assert.deepEqual(counts(broken.result.report.byKind), {
          'realisation-malformed': 2,
          'realisation-output-missing': 2,
          'realisation-signature-invalid': 2,
          'realisation-signature-untrusted': 2,
        });
        const keysOf = (problems: readonly { kind: ProblemKind; key: string }[], kind: ProblemKind) =>
          problems
            .filter((p) => p.kind === kind)
            .map((p) => p.key)
            .sort();
        // Nix checks no realisation's signatures: those are warnings
        assert.deepEqual(keysOf(broken.result.report.warnings, 'realisation-signature-invalid'), [
          traceKey(4),
          realisationKey(4),
        ]);
        assert.deepEqual(keysOf(broken.result.report.warnings, 'realisation-signature-untrusted'), [
          traceKey(5),
          realisationKey(5),
        ]);
        assert.deepEqual(keysOf(broken.result.report.problems, 'realisation-malformed'), [
          traceKey(2),
          realisationKey(2),
        ]);

        // Without --strict a repair leaves the warnings alone; with it, it signs them again.
        const repairArgs = [...keyArgs, '--repair', '--secret-key-file', trusted.secretFile];
        const lenient = (await verify(repairArgs, env)).result.repair;
        assert.deepEqual(lenient?.resigned, []);
        const repaired = await verify([...repairArgs, '--strict'], env);
        const repair = repaired.result.repair;
        assert.ok(repair !== undefined);
        assert.deepEqual(repair.resigned.sort(), [traceKey(4), traceKey(5), realisationKey(4), realisationKey(5)]);
        assert.deepEqual(repair.uploaded, []);
        assert.deepEqual(repair.unrepaired.map((u) => u.key).sort(), [
          traceKey(2),
          traceKey(3),
          realisationKey(2),
          realisationKey(3),
        ]);
        // What is left: the malformed ones, and those whose output this machine has never had.
        assert.deepEqual(counts(repair.after.byKind), { 'realisation-malformed': 2, 'realisation-output-missing': 2 });
        assert.equal(repaired.code, 1);
        // The untrusted signature is kept beside the new one; the broken one is gone.
        const read = async (key: string) => ((await cache.get(key)) as Buffer).toString('utf8');
        const resigned = parseRealisation(await read(realisationKey(5)), 'id 5');
        assert.deepEqual(resigned.signatures.map((sig) => sig.split(':')[0]).sort(), [other.name, own.name].sort());
        const fixed = parseRealisation(await read(realisationKey(4)), 'id 4');
        assert.deepEqual(fixed.signatures, [sign(own, realisationFingerprint(fixed))]);
        const trace = { drvPath: drvOf(5), outputName: 'out' };
        const resignedTrace = parseBuildTrace(await read(traceKey(5)), trace, 'trace 5');
        assert.deepEqual(
          resignedTrace.signatures.map((sig) => sig.split(':')[0]).sort(),
          [other.name, own.name].sort(),
        );
        const fixedTrace = parseBuildTrace(await read(traceKey(4)), { drvPath: drvOf(4), outputName: 'out' }, 't4');
        assert.deepEqual(fixedTrace.signatures, [sign(own, buildTraceFingerprint(fixedTrace))]);

        await cache.delete([realisationKey(2), realisationKey(3), traceKey(2), traceKey(3)]);
        const clean = await verify([...keyArgs, '--strict'], env);
        assert.deepEqual([clean.result.report.problems, clean.result.report.warnings], [[], []]);
        assert.equal(clean.code, 0);
      } finally {
        await cache.close();
      }
    });
  });
}

// Nix 2.8 cannot write to S3; what verify reads is the same on both.
describe(withNix('cachectl verify on a cache nix copy wrote'), () => {
  it('accepts what nix copy wrote (xz, signed), and names what it did not check', async () => {
    requireNix();
    const env = testEnv();
    const trusted = await newKey('verify-nix-copy-1');
    const untrusted = await newKey('verify-nix-copy-other-1');
    const { lib } = await buildFixtures(['lib'], { nonce: `verify-nix-copy-${Date.now()}` });
    const dir = tempDir('verify-nix-copy');
    const copy = await run(
      'nix',
      ['copy', '--to', `file://${dir}?secret-key=${trusted.secretFile}&write-nar-listing=true`, lib],
      env,
    );
    assert.equal(copy.code, 0, copy.stderr);
    const signed = await verify(['--to', `file://${dir}`, '--trusted-public-key', trusted.publicKey, '--deep'], env);
    assert.deepEqual(signed.result.report.problems, []);
    assert.equal(signed.result.report.checked.nars, 1);
    assert.equal(signed.code, 0);
    const unchecked = await verify(['--to', `file://${dir}`], env);
    assert.equal(unchecked.code, 0);
    assert.deepEqual(unchecked.result.report.notes, ['signatures were not checked: give --trusted-public-key']);
    const wrongKey = await verify(['--to', `file://${dir}`, '--trusted-public-key', untrusted.publicKey], env);
    assert.equal(wrongKey.code, 1);
    assert.deepEqual(counts(wrongKey.result.report.byKind), { 'signature-untrusted': 1 });
  });

  it('passes a content-addressed cache whose realisations nix copy left unsigned, with warnings', async () => {
    requireNix();
    const env = {
      ...testEnv(),
      NIX_CONFIG: `${testEnv()['NIX_CONFIG'] ?? ''}\nexperimental-features = nix-command ca-derivations`,
    };
    const key = await newKey('verify-ca-1');
    const nonce = `verify-ca-${Date.now()}`;
    const installable = ['-f', CA_FIXTURES, 'top', '--argstr', 'nonce', nonce];
    const dir = tempDir('verify-ca');
    const copy = await run('nix', ['copy', '--to', `file://${dir}?secret-key=${key.secretFile}`, ...installable], env);
    assert.equal(copy.code, 0, copy.stderr);
    const lenient = await verify(['--to', `file://${dir}`, '--trusted-public-key', key.publicKey], env);
    assert.deepEqual(lenient.result.report.problems, []);
    assert.ok(lenient.result.report.warnings.length > 0);
    assert.ok(
      lenient.result.report.warnings.every(
        (warning) => warning.kind === 'realisation-signature-untrusted' && /it is not signed/.test(warning.message),
      ),
      JSON.stringify(lenient.result.report.warnings),
    );
    assert.equal(lenient.code, 0);
    const strict = await verify(['--to', `file://${dir}`, '--trusted-public-key', key.publicKey, '--strict'], env);
    assert.equal(strict.code, 1);
    // Nix's verdict: a fresh store substitutes it, building nothing.
    const substituted = await run(
      'nix-build',
      [CA_FIXTURES, '--no-out-link', '--argstr', 'nonce', nonce, '-A', 'top', '--store', tempDir('verify-ca-store')]
        .concat(['--max-jobs', '0', '--option', 'substituters', `file://${dir}`])
        .concat(['--option', 'trusted-public-keys', key.publicKey]),
      { ...env, XDG_CACHE_HOME: tempDir('xdg') },
    );
    assert.equal(substituted.code, 0, substituted.stderr);
  });
});
