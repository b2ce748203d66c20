import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TEMP_PREFIX } from '../src/cache/file.js';
import { buildFixtures, cachectl, nixClosure, requireNix, run, testEnv, tempDir } from './helpers/nix.js';
import { startS3rver, type S3Server } from './helpers/s3rver.js';

/** All files under a cache directory, relative, for "nothing was published" checks. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1))
    .sort();
}

function assertOneLineError(result: { code: number; stdout: string; stderr: string }, pattern: RegExp): void {
  assert.equal(result.code, 1, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line of error, got:\n${result.stderr}`);
  assert.match(lines[0] as string, /^cachectl: /);
  assert.match(lines[0] as string, pattern);
  assert.equal(result.stdout, '');
}

describe('cachectl push refuses bad input with one clear line and publishes nothing', () => {
  let goodKey = '';
  let tiny = '';
  let s3: S3Server;

  before(async () => {
    requireNix();
    ({ tiny } = await buildFixtures(['tiny']));
    const dir = tempDir('key');
    goodKey = join(dir, 'good.sec');
    assert.equal((await cachectl(['keygen', 'good-1', '--secret-key-file', goodKey])).code, 0);
    s3 = await startS3rver();
  });
  after(() => s3.stop());

  const fileCache = () => tempDir('cache');

  it('a store path that is not valid in the local store', async () => {
    const dir = fileCache();
    const missing = `/nix/store/${'0'.repeat(32)}-never-built`;
    assertOneLineError(await cachectl(['push', '--to', `file://${dir}`, missing]), /never-built is not a valid path in the local Nix store/);
    assert.deepEqual(filesUnder(dir), []);
  });

  it('a path outside the store, and one inside a store path', async () => {
    const dir = fileCache();
    assertOneLineError(await cachectl(['push', '--to', `file://${dir}`, '/etc/hostname']), /"\/etc\/hostname" is not in the Nix store \/nix\/store/);
    assertOneLineError(await cachectl(['push', '--to', `file://${dir}`, '/no/such/file']), /is not in the Nix store .*does not exist/);
    const { app } = await buildFixtures(['app']);
    assertOneLineError(await cachectl(['push', '--to', `file://${dir}`, `${app}/bin/app`]), /inside the store path .*-cachectl-app; pass that instead/);
    assert.deepEqual(filesUnder(dir), []);
  });

  it('follows a ./result-style link to the store path', async () => {
    const dir = fileCache();
    const linkDir = tempDir('link');
    const result = join(linkDir, 'result');
    await run('ln', ['-s', tiny, result]);
    const pushed = await cachectl(['push', '--to', `file://${dir}`, result]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.ok(filesUnder(dir).includes(`${tiny.slice(11, 43)}.narinfo`));
  });

  const badKeys: [string, string, RegExp][] = [
    ['malformed', 'not-a-key-but-a-secret-phrase', /secret key file .*bad\.sec is malformed: expected NAME:BASE64/],
    ['a public key', 'name:uKj67C0jikDZ257kAxiJ0GHGhhhMtKOBtzOJkDQNW8s=', /holds 32 bytes, not 64.*public key/],
    ['truncated', `name:${Buffer.alloc(40).toString('base64')}`, /holds 40 bytes, not 64/],
  ];
  for (const [name, content, pattern] of badKeys) {
    it(`a secret key file that is ${name}, never echoing its content`, async () => {
      const dir = fileCache();
      const keyFile = join(tempDir('key'), 'bad.sec');
      writeFileSync(keyFile, content, { mode: 0o600 });
      const result = await cachectl(['push', '--to', `file://${dir}`, '--secret-key-file', keyFile, tiny]);
      assertOneLineError(result, pattern);
      assert.ok(!result.stderr.includes(content.slice(5)), 'key material in the error');
      assert.deepEqual(filesUnder(dir), []);
    });
  }

  it('a secret key file readable by others, and one that does not exist', async () => {
    const dir = fileCache();
    const keyFile = join(tempDir('key'), 'open.sec');
    writeFileSync(keyFile, readFileSync(goodKey));
    chmodSync(keyFile, 0o644);
    assertOneLineError(
      await cachectl(['push', '--to', `file://${dir}`, '--secret-key-file', keyFile, tiny]),
      /secret key file .*open\.sec is accessible to group or others \(mode 644\); run: chmod 600 /,
    );
    chmodSync(keyFile, 0o640);
    assertOneLineError(await cachectl(['push', '--to', `file://${dir}`, '--secret-key-file', keyFile, tiny]), /mode 640/);
    assertOneLineError(
      await cachectl(['push', '--to', `file://${dir}`, '--secret-key-file', `${keyFile}.missing`, tiny]),
      /cannot read secret key file .*open\.sec\.missing: ENOENT/,
    );
    assert.deepEqual(filesUnder(dir), []);
  });

  it('an unknown --compression, a bad --jobs and a bad cache URL, all reported at once', async () => {
    const dir = fileCache();
    assertOneLineError(
      await cachectl(['push', '--to', `file://${dir}`, '--compression', 'gzip', tiny]),
      /unknown compression "gzip"; use one of zstd, xz, none/,
    );
    const result = await cachectl(['push', '--to', 'ftp://x', '--compression', 'lz4', '--jobs', '0', tiny]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /unsupported scheme ftp:/);
    assert.match(result.stderr, /unknown compression "lz4"/);
    assert.match(result.stderr, /jobs "0" must be a whole number/);
    assertOneLineError(await cachectl(['push', tiny], testEnv({ CACHECTL_TO: '' })), /no cache given: pass --to URL or set CACHECTL_TO/);
    assert.deepEqual(filesUnder(dir), []);
  });

  it('an unreachable S3 endpoint', async () => {
    const result = await cachectl(['push', '--to', 's3://nix-cache?endpoint=http://127.0.0.1:9', tiny], testEnv(s3.env));
    assertOneLineError(result, /s3:\/\/nix-cache\/ at http:\/\/127\.0\.0\.1:9: ECONNREFUSED; is the endpoint right and the server up\?/);
  });

  it('a bucket that does not exist', async () => {
    const result = await cachectl(['push', '--to', `s3://no-such-bucket?endpoint=${s3.endpoint}`, tiny], testEnv(s3.env));
    assertOneLineError(result, /the bucket no-such-bucket does not exist; create it or fix --to/);
  });

  it('wrong credentials, without echoing the secret', async () => {
    const env = testEnv({ AWS_ACCESS_KEY_ID: 'WRONG-ID', AWS_SECRET_ACCESS_KEY: 'very-secret-value' });
    const result = await cachectl(['push', '--to', s3.cacheUrl('denied'), tiny], env);
    assertOneLineError(result, /access denied \(InvalidAccessKeyId\); check the AWS credentials/);
    assert.ok(!result.stderr.includes('very-secret-value'));
    const listing = await fetch(`${s3.httpUrl}?list-type=2&prefix=denied/`);
    assert.doesNotMatch(await listing.text(), /<Key>/, 'something was written with wrong credentials');
  });

  it('a cache made for another store directory', async () => {
    const dir = fileCache();
    writeFileSync(join(dir, 'nix-cache-info'), 'StoreDir: /gnu/store\n');
    assertOneLineError(await cachectl(['push', '--to', `file://${dir}`, tiny]), /is for the store \/gnu\/store, not \/nix\/store; use another cache/);
    assert.deepEqual(filesUnder(dir), ['nix-cache-info']);
  });
});

describe('a store path whose contents no longer match its NarHash', () => {
  let s3: S3Server;
  before(async () => {
    requireNix();
    s3 = await startS3rver();
  });
  after(() => s3.stop());

  for (const target of ['file', 's3'] as const) {
    it(`is refused on ${target}://, with its dependents, and nothing of it is published`, async () => {
      const nonce = `corrupt-${target}-${Date.now()}`;
      const paths = await buildFixtures(['top', 'lib', 'big'], { nonce, bigMb: 20 });
      // Corrupt lib (referenced by app and top) and big (a multipart upload on s3) behind Nix's back.
      for (const file of [`${paths.lib}/lib/libdemo.txt`, `${paths.big}/zeros.bin`]) {
        chmodSync(file, 0o644);
        writeFileSync(file, 'tampered\n');
      }
      const dir = tempDir('cache');
      const cacheUrl = target === 'file' ? `file://${dir}` : s3.cacheUrl(nonce);
      const env = target === 'file' ? testEnv() : testEnv(s3.env);
      const result = await cachectl(['push', '--json', '--to', cacheUrl, paths.top, paths.big], env);
      assert.equal(result.code, 1);
      const report = JSON.parse(result.stdout) as { uploaded: string[]; failed: { path: string; code: string; message: string }[] };
      const failed = Object.fromEntries(report.failed.map((f) => [f.path, f]));
      for (const path of [paths.lib, paths.big]) {
        assert.equal(failed[path]?.code, 'NAR_HASH_MISMATCH');
        assert.match(failed[path]?.message ?? '', /does not match the Nix database .* the store path is corrupt; repair it with nix-store --repair-path/);
      }
      const app = (await nixClosure([paths.top])).find((p) => p.endsWith(`-cachectl-app-${nonce}`)) as string;
      for (const path of [app, paths.top]) assert.equal(failed[path]?.code, 'DEPENDENCY_FAILED');
      assert.deepEqual(report.uploaded, []);
      // Nothing of the corrupt paths exists in the cache: no narinfo, no NAR, no temp file, no multipart leftovers.
      const hashPart = (path: string) => path.slice(11, 43);
      let keys: string[];
      if (target === 'file') {
        keys = filesUnder(dir);
      } else {
        const listing = await (await fetch(`${s3.httpUrl}?list-type=2&prefix=${nonce}/`)).text();
        keys = [...listing.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => (m[1] as string).slice(nonce.length + 1));
      }
      assert.ok(keys.includes('nix-cache-info'));
      assert.deepEqual(keys.filter((key) => key.includes(TEMP_PREFIX)), [], 'temp files were left behind');
      for (const path of [paths.lib, app, paths.top, paths.big]) assert.ok(!keys.includes(`${hashPart(path)}.narinfo`), path);
      // The corrupt paths' NARs (keyed by the NarHash Nix recorded) were never completed.
      for (const path of [paths.lib, paths.big]) {
        const narHash = (await run('nix-store', ['-q', '--hash', path])).stdout.trim().slice('sha256:'.length);
        assert.ok(!keys.includes(`nar/${narHash}.nar.zst`), `the NAR of ${path} was published`);
      }
    });
  }
});
