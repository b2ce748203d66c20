import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { openCache } from '../src/cache/open.js';
import { cacheProblems, observeCache } from './helpers/cache.js';
import {
  buildFixtures,
  cachectl,
  CACHECTL,
  newKey,
  nixAtLeast,
  nixClosure,
  nixCopyFrom,
  nixVerify,
  pathInfoJsonArgs,
  requireNix,
  run,
  testEnv,
  tempDir,
  type Key,
  withNix,
} from './helpers/nix.js';
import { startLatencyProxy } from './helpers/latency-proxy.js';
import { startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';

async function pushJson(args: string[], env: NodeJS.ProcessEnv) {
  const result = await cachectl(['push', '--json', ...args], env);
  assert.equal(result.code, 0, `push failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as {
    closurePaths: number;
    alreadyPresent: number;
    uploaded: string[];
    failed: { path: string; code: string; message: string }[];
  };
}

for (const target of ['file', 's3'] as const) {
  describe(withNix(`cachectl push to ${target}://`), () => {
    let s3: S3Server | undefined;
    let cacheUrl = '';
    let nixUrl = '';
    let env: NodeJS.ProcessEnv = {};
    let key: Key;

    before(async () => {
      requireNix();
      key = await newKey(`cachectl-test-${target}-1`);
      if (target === 's3') {
        s3 = await startTestS3();
        cacheUrl = s3.cacheUrl();
        nixUrl = s3.nixUrl();
        env = testEnv(s3.env);
        useS3Here(s3);
      } else {
        const dir = tempDir('cache');
        cacheUrl = `file://${dir}`;
        nixUrl = cacheUrl;
        env = testEnv();
      }
    });
    after(() => s3?.stop());

    it(
      'uploads closures (references, two outputs, symlink and executable roots, a multipart NAR) that Nix verifies ' +
        'and substitutes',
      async () => {
        const paths = await buildFixtures(['top', 'multi.out', 'multi.dev', 'tree', 'symroot', 'execroot', 'big']);
        const roots = Object.values(paths);
        const closure = await nixClosure(roots);
        const result = await pushJson(['--to', cacheUrl, '--secret-key-file', key.secretFile, ...roots], env);
        assert.equal(result.closurePaths, closure.length);
        assert.deepEqual([...result.uploaded].sort(), closure);
        assert.deepEqual(result.failed, []);

        const verify = await nixVerify(nixUrl, key.publicKey, roots);
        assert.equal(verify.code, 0, verify.stderr);
        const copy = await nixCopyFrom(nixUrl, key.publicKey, roots);
        assert.equal(copy.code, 0, copy.stderr);
        // A key Nix does not trust must fail verification: the check above is not vacuous.
        const other = await newKey('someone-else-1');
        const untrusted = await nixVerify(nixUrl, other.publicKey, [paths.tree]);
        assert.notEqual(untrusted.code, 0);
      },
    );

    it('uploads nothing the second time', async () => {
      const paths = await buildFixtures(['top', 'tree']);
      await pushJson(['--to', cacheUrl, '--secret-key-file', key.secretFile, paths.top, paths.tree], env);
      const again = await pushJson(['--to', cacheUrl, '--secret-key-file', key.secretFile, paths.top, paths.tree], env);
      assert.deepEqual(again.uploaded, []);
      assert.equal(again.alreadyPresent, again.closurePaths);
      assert.ok(again.closurePaths >= 4);
    });

    if (target === 's3')
      it('serves NARs without Content-Encoding and with Nix content types', async () => {
        const paths = await buildFixtures(['tiny']);
        await pushJson(['--to', cacheUrl, paths.tiny], env);
        const hashPart = paths.tiny.slice('/nix/store/'.length, '/nix/store/'.length + 32);
        const httpUrl = (s3 as S3Server).httpUrl;
        const narinfo = await fetch(`${httpUrl}/${hashPart}.narinfo`);
        assert.equal(narinfo.headers.get('content-type'), 'text/x-nix-narinfo');
        const url = /^URL: (.*)$/m.exec(await narinfo.text())?.[1];
        const nar = await fetch(`${httpUrl}/${url}`);
        assert.equal(nar.status, 200);
        assert.equal(nar.headers.get('content-encoding'), null);
        assert.equal(nar.headers.get('content-type'), 'application/x-nix-nar');
      });

    if (target === 's3')
      it('sends a NAR of up to 32 MiB in one PUT and a larger one as a multipart upload', async () => {
        const server = s3 as S3Server;
        const proxy = await startLatencyProxy(server.port, { delayMs: 0 });
        try {
          for (const [bigMb, posts] of [
            [30, 0],
            [40, 2], // CreateMultipartUpload and CompleteMultipartUpload
          ] as const) {
            const nonce = `whole-${bigMb}-${Date.now()}`;
            const { big } = await buildFixtures(['big'], { nonce, bigMb });
            const before = proxy.stats.byMethod['POST'] ?? 0;
            const to = `s3://${server.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1&prefix=${nonce}`;
            const result = await pushJson(['--to', to, '--secret-key-file', key.secretFile, big], env);
            assert.deepEqual(result.uploaded, [big]);
            assert.equal((proxy.stats.byMethod['POST'] ?? 0) - before, posts, `POSTs for a ${bigMb} MiB NAR`);
            const verify = await nixVerify(server.nixUrl(nonce), key.publicKey, [big]);
            assert.equal(verify.code, 0, verify.stderr);
          }
        } finally {
          await proxy.stop();
        }
      });

    it(
      'a push killed midway never leaves a narinfo whose NAR or references are missing, and the next ' +
        'push finishes',
      async () => {
        const nonce = `kill-${target}-${Date.now()}`;
        const { chain } = await buildFixtures(['chain'], { nonce, chainLength: 40 });
        const closure = new Set((await nixClosure([chain])).map((path) => `${path.slice(11, 43)}.narinfo`));
        const backend = await openCache(parseCacheUrl(cacheUrl));
        const published = async () => {
          let count = 0;
          for await (const page of backend.list('')) count += page.filter(({ key }) => closure.has(key)).length;
          return count;
        };
        // How long a whole push of this closure takes here, pushed to a scratch cache: kills land at fractions of it.
        const scratch =
          target === 'file' ? `file://${tempDir('scratch')}` : (s3 as S3Server).cacheUrl(`${nonce}-scratch`);
        const started = Date.now();
        await pushJson(['--jobs', '2', '--to', scratch, chain], env);
        const wholeMs = Date.now() - started;
        const observer = observeCache(backend);
        let killedMidway = 0;
        try {
          for (const fraction of [0.3, 0.6, 0.9]) {
            const child = spawn(process.execPath, [CACHECTL, 'push', '--jobs', '2', '--to', cacheUrl, chain], {
              env,
              stdio: 'ignore',
            });
            const exited = new Promise((resolve) => child.once('exit', resolve));
            await sleep(wholeMs * fraction);
            child.kill('SIGKILL');
            await exited;
            if ((await published()) < closure.size) killedMidway += 1;
            assert.deepEqual(
              (await cacheProblems(backend)).problems,
              [],
              `after the kill at ${fraction} of a whole push`,
            );
          }
        } finally {
          const seen = await observer.stop();
          await backend.close();
          assert.ok(seen.rounds > 0);
          assert.deepEqual(seen.problems, [], 'the observer saw a broken cache while pushes were killed');
        }
        assert.ok(killedMidway > 0, 'no push was killed before it finished; make the chain longer');
        const finish = await pushJson(['--to', cacheUrl, '--secret-key-file', key.secretFile, chain], env);
        assert.deepEqual(finish.failed, []);
        assert.equal(finish.closurePaths, closure.size);
        // The killed runs published unsigned narinfos; check content and closure completeness.
        const verify = await run('nix', ['store', 'verify', '--store', nixUrl, '--no-trust', '-r', chain], env);
        assert.equal(verify.code, 0, verify.stderr);
      },
    );
  });
}

describe(withNix('narinfos and NARs compared with nix copy'), () => {
  let secretFile = '';
  before(async () => {
    requireNix();
    const dir = tempDir('nixkey');
    secretFile = join(dir, 'nix.sec');
    const generated = await run('nix', ['key', 'generate-secret', '--key-name', 'nix-made-1']);
    assert.equal(generated.code, 0, generated.stderr);
    writeFileSync(secretFile, generated.stdout, { mode: 0o600 });
    chmodSync(secretFile, 0o600);
  });

  const cacheFiles = (dir: string) =>
    readdirSync(dir)
      .filter((name) => name.endsWith('.narinfo'))
      .sort();

  /** Caches of `roots` written by `nix copy` and by `cachectl push`, with `compression` and the key Nix made. */
  async function writtenByBoth(roots: string[], compression: string): Promise<{ nixDir: string; ourDir: string }> {
    const nixDir = tempDir('nixcopy');
    const ourDir = tempDir('ours');
    const to = `file://${nixDir}?compression=${compression}&secret-key=${secretFile}`;
    const copy = await run('nix', ['copy', '--to', to, ...roots]);
    assert.equal(copy.code, 0, copy.stderr);
    await pushJson(
      ['--to', `file://${ourDir}`, '--compression', compression, '--secret-key-file', secretFile, ...roots],
      testEnv(),
    );
    assert.deepEqual(cacheFiles(ourDir), cacheFiles(nixDir));
    return { nixDir, ourDir };
  }

  it(
    'with compression none: every narinfo and NAR byte for byte, signature included, from a key ' + 'made by Nix',
    async () => {
      const paths = await buildFixtures(['top', 'multi.dev', 'tree', 'symroot', 'execroot']);
      // A content-addressed path (CA: line, no Deriver) beside the input-addressed ones.
      const addDir = tempDir('ca');
      writeFileSync(join(addDir, 'cachectl-ca-file'), 'content-addressed\n');
      const added = await run('nix-store', ['--add', join(addDir, 'cachectl-ca-file')]);
      assert.equal(added.code, 0, added.stderr);
      const roots = [...Object.values(paths), added.stdout.trim()];
      const { nixDir, ourDir } = await writtenByBoth(roots, 'none');
      assert.ok(cacheFiles(ourDir).length >= 8);
      for (const name of cacheFiles(nixDir)) {
        assert.equal(readFileSync(join(ourDir, name), 'utf8'), readFileSync(join(nixDir, name), 'utf8'), name);
      }
      const caNarInfo = readFileSync(join(ourDir, `${added.stdout.trim().slice(11, 43)}.narinfo`), 'utf8');
      assert.match(caNarInfo, /^CA: fixed:r:sha256:[0-9a-z]{52}$/m);
      assert.doesNotMatch(caNarInfo, /^Deriver:/m);
      assert.deepEqual(readdirSync(join(ourDir, 'nar')).sort(), readdirSync(join(nixDir, 'nar')).sort());
      for (const name of readdirSync(join(nixDir, 'nar'))) {
        assert.ok(readFileSync(join(ourDir, 'nar', name)).equals(readFileSync(join(nixDir, 'nar', name))), name);
      }
    },
  );

  it("with two signatures: in Nix's order as nix copy writes it (>= 2.34: by key name, then bytes)", async () => {
    const paths = await buildFixtures(['top', 'execroot'], { nonce: `two-sigs-${Date.now()}` });
    const roots = Object.values(paths);
    // A second key, signing in the local store: "nix-made" sorts before "nix-made-1" as a name, after it as text.
    const other = join(tempDir('nixkey'), 'other.sec');
    const generated = await run('nix', ['key', 'generate-secret', '--key-name', 'nix-made']);
    writeFileSync(other, generated.stdout, { mode: 0o600 });
    const signed = await run('nix', ['store', 'sign', '--key-file', other, '-r', ...roots]);
    assert.equal(signed.code, 0, signed.stderr);
    const { nixDir, ourDir } = await writtenByBoth(roots, 'none');
    const sigNames = (text: string) => [...text.matchAll(/^Sig: ([^:]+):/gm)].map((match) => match[1]);
    for (const name of cacheFiles(nixDir)) {
      const ours = readFileSync(join(ourDir, name), 'utf8');
      const nixs = readFileSync(join(nixDir, name), 'utf8');
      assert.deepEqual(sigNames(ours), ['nix-made', 'nix-made-1'], name);
      // Nix 2.8 kept them as text (std::set<std::string>): "nix-made-1:" first
      if (nixAtLeast('2.34')) assert.equal(ours, nixs, name);
      else assert.deepEqual(ours.split('\n').sort(), nixs.split('\n').sort(), name);
    }
  });

  it('NarSize as nix path-info --json gives it, called with the flags this Nix takes (no warning)', async () => {
    const { top } = await buildFixtures(['top']);
    const ourDir = tempDir('ours');
    await pushJson(['--to', `file://${ourDir}`, '--compression', 'none', top], testEnv());
    const info = await run('nix', [...pathInfoJsonArgs(), top]);
    assert.deepEqual([info.code, info.stderr], [0, '']);
    const narinfo = readFileSync(join(ourDir, `${top.slice(11, 43)}.narinfo`), 'utf8');
    assert.equal(/"narSize":(\d+)/.exec(info.stdout)?.[1], /^NarSize: (\d+)$/m.exec(narinfo)?.[1]);
  });

  it('with zstd and xz: every narinfo line but URL, FileHash and FileSize', async () => {
    const paths = await buildFixtures(['top', 'tree', 'execroot']);
    const roots = Object.values(paths);
    for (const compression of ['zstd', 'xz']) {
      const { nixDir, ourDir } = await writtenByBoth(roots, compression);
      const stable = (text: string) => text.replace(/^(URL|FileHash|FileSize): .*\n/gm, '');
      for (const name of cacheFiles(nixDir)) {
        const ours = readFileSync(join(ourDir, name), 'utf8');
        assert.equal(stable(ours), stable(readFileSync(join(nixDir, name), 'utf8')), `${compression} ${name}`);
        assert.match(ours, new RegExp(`^URL: nar/[0-9a-z]{52}\\.nar\\.${compression === 'zstd' ? 'zst' : 'xz'}$`, 'm'));
        assert.match(ours, /^FileHash: sha256:[0-9a-z]{52}\nFileSize: [1-9][0-9]*$/m);
      }
      const verify = await run('nix', ['store', 'verify', '--store', `file://${ourDir}`, '--no-trust', '-r', ...roots]);
      assert.equal(verify.code, 0, verify.stderr);
    }
  });
});

describe(withNix('cachectl push --skip-signed-by'), () => {
  it("leaves out the paths signed by another cache's key and uploads the paths that refer to them", async () => {
    requireNix();
    const env = testEnv();
    const { app, lib } = await buildFixtures(['app', 'lib'], { nonce: `skip-signed-${Date.now()}` });
    // lib as if substituted from upstream: signed by upstream's key in the local store.
    const upstream = await newKey('upstream.example.org-1');
    const sign = await run('nix', ['store', 'sign', '--key-file', upstream.secretFile, lib], env);
    assert.equal(sign.code, 0, sign.stderr);
    const key = await newKey('cachectl-skip-test-1');
    const dir = tempDir('skip-cache');
    const result = (await pushJson(
      ['--to', `file://${dir}`, '--secret-key-file', key.secretFile, '--skip-signed-by', 'upstream.example.org-1', app],
      env,
    )) as Awaited<ReturnType<typeof pushJson>> & { skippedSignedBy: number };
    assert.deepEqual(
      { uploaded: result.uploaded, skipped: result.skippedSignedBy, closure: result.closurePaths },
      { uploaded: [app], skipped: 1, closure: 2 },
    );
    assert.ok(!readdirSync(dir).includes(`${lib.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`));
    const verify = await run(
      'nix',
      ['store', 'verify', '--store', `file://${dir}`, '--trusted-public-keys', key.publicKey, app],
      env,
    );
    assert.equal(verify.code, 0, verify.stderr);
    // Another key name skips nothing; a malformed one is refused before anything happens.
    const all = await pushJson(
      ['--to', `file://${tempDir('skip-cache')}`, '--skip-signed-by', 'cache.nixos.org-1', app],
      env,
    );
    assert.deepEqual([...all.uploaded].sort(), [app, lib].sort());
    const bad = await cachectl(
      ['push', '--to', `file://${tempDir('skip-cache')}`, '--skip-signed-by', 'upstream:key', app],
      env,
    );
    assert.equal(bad.code, 1);
    assert.equal(
      bad.stderr,
      'cachectl: skip-signed-by "upstream:key" is not a key name such as cache.nixos.org-1 (the part before \':\' ' +
        'of a public key)\n',
    );
  });
});
