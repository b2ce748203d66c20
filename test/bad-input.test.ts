/**
 * The catalogue of bad input. Each case gives cachectl one bad thing — a path, a key, a URL, credentials, a
 * config file, a queue, an object in the bucket — and checks the exact error it gets. Then it proves that nothing
 * was lost: the queue keeps its rows, the cache keeps every object byte for byte, and nothing new is published.
 * Where the fault can be mended while cachectl runs (expired credentials), it checks that the work then
 * completes.
 */
import assert from 'node:assert/strict';
import { CONFIG_KEYS } from '../src/core/config.js';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { containedKey } from '../src/cache/backend.js';
import { FileBackend, TEMP_PREFIX } from '../src/cache/file.js';
import { openCache } from '../src/cache/open.js';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { hookInboxFiles } from '../src/queue/schema.js';
import { dropLeases } from './helpers/cache.js';
import { errOf, queueEnv, queueStatus, settled, startDaemon, stopDaemon } from './helpers/daemon.js';
import { createQueue, inbox, runHook } from './helpers/hook.js';
import {
  buildFixtures,
  cachectl,
  newKey,
  nixClosure,
  nixVerify,
  requireNix,
  run,
  tempDir,
  testEnv,
  type Key,
  withNix,
} from './helpers/nix.js';
import { regex } from './helpers/regex.js';
import { startS3rver, useS3Here, type S3Server } from './helpers/s3rver.js';

type Result = { code: number; stdout: string; stderr: string };

/** Every file under a directory, relative, with a digest of its content. */
function filesUnder(dir: string): Record<string, string> {
  if (!existsSync(dir)) return {};
  const files = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
  return Object.fromEntries(
    files
      .map((entry) => join(entry.parentPath, entry.name))
      .sort()
      .map((file) => [file.slice(dir.length + 1), createHash('sha256').update(readFileSync(file)).digest('hex')]),
  );
}

/** Every object of the s3rver bucket under `prefix` (the whole bucket for ''), with its ETag. */
async function objectsUnder(s3: S3Server, prefix: string): Promise<Record<string, string>> {
  const listing = await (
    await fetch(`${s3.httpUrl}?list-type=2&max-keys=1000&prefix=${encodeURIComponent(prefix)}`)
  ).text();
  assert.doesNotMatch(listing, /<IsTruncated>true/, 'the snapshot needs one page');
  return Object.fromEntries(
    [...listing.matchAll(/<Key>([^<]*)<\/Key>.*?<ETag>([^<]*)<\/ETag>/gs)].map((m): [string, string] => [
      m[1] ?? '',
      m[2] ?? '',
    ]),
  );
}

/** The rows of a queue database and its inboxes, as they are on disk (read without changing anything). */
function queueRows(file: string): unknown[] {
  const rows: unknown[] = [];
  for (const path of [file, ...hookInboxFiles(file)]) {
    if (!existsSync(path)) continue;
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const tables = new Set(
        (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map(
          (t) => t.name,
        ),
      );
      if (tables.has('paths'))
        rows.push(...db.prepare('SELECT store_path, state, attempts, last_error FROM paths ORDER BY store_path').all());
      rows.push(...db.prepare('SELECT store_path, source FROM inbox ORDER BY id').all());
    } finally {
      db.close();
    }
  }
  return rows;
}

/** Exit 1, nothing on stdout, and exactly this error line. */
function assertRefused(result: Result, error: string | RegExp): void {
  assert.equal(result.code, 1, `exit code; stderr: ${result.stderr}`);
  assert.equal(result.stdout, '');
  if (typeof error === 'string') assert.equal(result.stderr, `cachectl: ${error}\n`);
  else assert.match(result.stderr, error);
}

/** A hook run: exit 0 (a failing hook stops Nix's builds), and exactly these lines on stderr. */
function assertHookSays(result: Result, lines: string[]): void {
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, '');
  assert.equal(result.stderr, lines.map((line) => `cachectl post-build-hook: ${line}\n`).join(''));
}

describe(withNix('the catalogue of bad input: each gets its exact error, and nothing is lost'), () => {
  let paths: Record<'tiny' | 'lib' | 'app', string>;
  let key: Key;
  let s3: S3Server;
  /** the world a bad input must not harm: a file cache and an s3 cache holding `tiny`, a queue holding `lib` */
  let env: ReturnType<typeof queueEnv>;
  let fileCache: string;
  let fileUrl: string;
  const s3Prefix = 'catalogue';
  let s3Url: string;

  const snapshot = async () => ({
    file: filesUnder(fileCache),
    bucket: await objectsUnder(s3, ''),
    queue: queueRows(env.CACHECTL_QUEUE),
  });

  /**
   * Runs a bad command: it gets exactly `error`, no secret in `secrets` shows in its output, and the caches and
   * the queue are as they were.
   */
  async function refusedLosingNothing(
    command: () => Promise<Result>,
    error: string | RegExp,
    secrets: string[] = [],
  ): Promise<void> {
    const before = await snapshot();
    const result = await command();
    assertRefused(result, error);
    for (const secret of secrets) assert.ok(!result.stderr.includes(secret), 'a secret in the error');
    assert.deepEqual(await snapshot(), before, 'a bad input changed the caches or the queue');
  }
  const push = (args: string[], extraEnv: Record<string, string> = {}) =>
    cachectl(['push', ...args], { ...env, CACHECTL_SECRET_KEY_FILES: key.secretFile, ...extraEnv });

  before(async () => {
    requireNix();
    paths = await buildFixtures(['tiny', 'lib', 'app'], { nonce: `catalogue-${Date.now()}` });
    key = await newKey('catalogue-1');
    s3 = await startS3rver();
    useS3Here(s3);
    env = queueEnv(s3.env);
    fileCache = tempDir('cache');
    fileUrl = `file://${fileCache}`;
    s3Url = s3.cacheUrl(s3Prefix);
    for (const url of [fileUrl, s3Url]) {
      const pushed = await push(['--to', url, paths.tiny]);
      assert.equal(pushed.code, 0, pushed.stderr);
    }
    const queued = await cachectl(['enqueue', paths.lib], env);
    assert.equal(queued.code, 0, queued.stderr);
    assert.equal(queueRows(env.CACHECTL_QUEUE).length, 1);
  });
  after(() => s3.stop());

  describe('store paths given to push and enqueue', () => {
    const missing = `/nix/store/${'0'.repeat(32)}-never-built`;

    it('a path that is not valid in the local store', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, missing]),
        `${missing} is not a valid path in the local Nix store (deleted by garbage collection, or never built ` +
          `here?); build or substitute it first`,
      ));

    it('a path outside the store', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, '/etc/hostname']),
        '"/etc/hostname" is not in the Nix store /nix/store; pass a store path or a link to one (such as ./result)',
      ));

    it('a path that does not exist', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, '/no/such/file']),
        '"/no/such/file" is not in the Nix store /nix/store: it does not exist',
      ));

    it('a file inside a store path', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, `${paths.app}/bin/app`]),
        `"${paths.app}/bin/app" is not a valid store path: it is inside the store path ${paths.app}; pass that instead`,
      ));

    it('.. climbing out of the store', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, '/nix/store/../../tmp']),
        '"/nix/store/../../tmp" is not in the Nix store /nix/store; pass a store path or a link to one (such as ' +
          './result)',
      ));

    it('enqueue of a path that is not valid in the local store', () =>
      refusedLosingNothing(
        () => cachectl(['enqueue', missing], env),
        `${missing} is not valid in the local Nix store; build or substitute first`,
      ));
  });

  describe('signing keys', () => {
    const keyFile = (content: string | Buffer, mode = 0o600) => {
      const file = join(tempDir('key'), 'bad.sec');
      writeFileSync(file, content, { mode });
      chmodSync(file, mode);
      return file;
    };
    const badKeys: [string, string, (file: string) => string][] = [
      [
        'malformed',
        'not-a-key-but-a-secret-phrase',
        (file) =>
          `secret key file ${file} is malformed: expected NAME:BASE64 of 64 bytes as written by \`nix key ` +
          `generate-secret\` or \`cachectl keygen\``,
      ],
      [
        'a public key',
        'name:uKj67C0jikDZ257kAxiJ0GHGhhhMtKOBtzOJkDQNW8s=',
        (file) =>
          `secret key file ${file} holds 32 bytes, not 64: expected NAME:BASE64 of 64 bytes as written by \`nix key ` +
          `generate-secret\` or \`cachectl keygen\` (is it a public key?)`,
      ],
      [
        'truncated',
        `name:${Buffer.alloc(40, 7).toString('base64')}`,
        (file) =>
          `secret key file ${file} holds 40 bytes, not 64: expected NAME:BASE64 of 64 bytes as written by \`nix key ` +
          `generate-secret\` or \`cachectl keygen\``,
      ],
    ];
    for (const [name, content, error] of badKeys) {
      it(`a secret key file that is ${name}, never echoing its content`, async () => {
        const file = keyFile(content);
        await refusedLosingNothing(() => push(['--to', fileUrl, '--secret-key-file', file, paths.tiny]), error(file), [
          content.slice(5),
        ]);
      });
    }

    it('a secret key file readable by group or others', async () => {
      const file = keyFile(readFileSync(key.secretFile), 0o644);
      await refusedLosingNothing(
        () => push(['--to', fileUrl, '--secret-key-file', file, paths.tiny]),
        `secret key file ${file} is accessible to group or others (mode 644); run: chmod 600 ${file}`,
      );
    });

    it('a secret key file that does not exist', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, '--secret-key-file', '/no/such.sec', paths.tiny]),
        "cannot read secret key file /no/such.sec: ENOENT: no such file or directory, stat '/no/such.sec'",
      ));

    it('the daemon with a truncated key: it does not start, and the queue keeps its path', async () => {
      const file = keyFile(`name:${Buffer.alloc(40, 7).toString('base64')}`);
      await refusedLosingNothing(
        () => cachectl(['daemon', '--to', fileUrl, '--secret-key-file', file], env),
        badKeys[2]?.[2](file) as string,
      );
    });
  });

  describe('options, cache URLs and config files', () => {
    it('an unknown compression', () =>
      refusedLosingNothing(
        () => push(['--to', fileUrl, '--compression', 'gzip', paths.tiny]),
        'unknown compression "gzip"; use one of zstd, xz, none',
      ));

    it('several bad options, all reported at once', () =>
      refusedLosingNothing(
        () => push(['--to', 'ftp://x', '--compression', 'lz4', '--jobs', '0', paths.tiny]),
        /^cachectl: .*unsupported scheme ftp:.*\n.*unknown compression "lz4".*\n.*jobs "0" must be a whole number.*\n$/,
      ));

    it('no cache at all', () =>
      refusedLosingNothing(
        () => push([paths.tiny], { CACHECTL_TO: '' }),
        'no cache given: pass --to URL or set CACHECTL_TO',
      ));

    it('a cache URL whose prefix climbs into another prefix with ..', () =>
      refusedLosingNothing(
        () => push(['--to', `s3://${s3.bucket}?endpoint=${s3.endpoint}&prefix=${s3Prefix}/../other`, paths.tiny]),
        `cache URL "s3://${s3.bucket}?endpoint=${s3.endpoint}&prefix=${s3Prefix}/../other" has a prefix with empty, ` +
          `. or .. segments; expected file:///DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R`,
      ));

    it('a config file that is not JSON', async () => {
      const file = join(tempDir('config'), 'config.json');
      writeFileSync(file, '{"to": "file:///tmp/x",');
      await refusedLosingNothing(
        () => push(['--config', file, paths.tiny]),
        `config file ${file} is not valid JSON (Expected double-quoted property name in JSON at position 23); it ` +
          `must hold one JSON object, such as {"to": "s3://bucket?region=eu-west-1"}`,
      );
    });

    it('a config file with an unknown key and a value of the wrong type', async () => {
      const file = join(tempDir('config'), 'config.json');
      writeFileSync(file, JSON.stringify({ to: fileUrl, colour: 'blue', jobs: 'many' }));
      await refusedLosingNothing(
        () => push(['--config', file, paths.tiny]),
        `config file ${file} has the unknown key "colour" (known: ${Object.keys(CONFIG_KEYS).join(', ')})\n` +
          `cachectl: config file ${file}: key jobs must be a number`,
      );
    });
  });

  describe('queue databases', () => {
    it('enqueue into a corrupt queue: refused, and the file is left as it was for the operator', async () => {
      const file = join(tempDir('queue'), 'queue.db');
      writeFileSync(file, 'definitely not SQLite '.repeat(300));
      const bytes = readFileSync(file);
      await refusedLosingNothing(
        () => cachectl(['enqueue', paths.tiny], { ...env, CACHECTL_QUEUE: file }),
        `queue database ${file} cannot be used: file is not a database; if it is corrupt, move it aside and restart ` +
          `the daemon (the hook spools paths meanwhile)`,
      );
      assert.deepEqual(readFileSync(file), bytes);
    });

    it('enqueue into a queue made by a newer cachectl: refused, its rows kept', async () => {
      const file = join(tempDir('queue'), 'queue.db');
      copyFileSync(env.CACHECTL_QUEUE, file);
      const db = new Database(file);
      db.pragma('user_version = 99');
      db.close();
      const rows = queueRows(file);
      await refusedLosingNothing(
        () => cachectl(['enqueue', paths.tiny], { ...env, CACHECTL_QUEUE: file }),
        `queue database ${file} was made by a newer cachectl (schema 99; this one knows 2); upgrade cachectl. Its ` +
          `paths are kept`,
      );
      assert.deepEqual(queueRows(file), rows);
    });
  });

  describe('the S3 server and its credentials', () => {
    it('an unreachable endpoint', () =>
      refusedLosingNothing(
        () => push(['--to', `s3://${s3.bucket}?endpoint=http://127.0.0.1:9`, paths.tiny]),
        `GET nix-cache-info in s3://${s3.bucket}?endpoint=http://127.0.0.1:9: ECONNREFUSED; is the endpoint ` +
          `right and the server up?`,
      ));

    it('a bucket that does not exist', () =>
      refusedLosingNothing(
        () => push(['--to', `s3://no-such-bucket?endpoint=${s3.endpoint}`, paths.tiny]),
        `GET nix-cache-info in s3://no-such-bucket?endpoint=${s3.endpoint}: the bucket no-such-bucket does not ` +
          `exist; create it or fix --to`,
      ));

    it('wrong credentials, without echoing the secret', async () => {
      await refusedLosingNothing(
        () =>
          push(['--to', s3Url, paths.lib], {
            AWS_ACCESS_KEY_ID: 'WRONG-ID',
            AWS_SECRET_ACCESS_KEY: 'very-secret-value',
          }),
        regex(
          /^cachectl: \S+ \S+ in s3:\/\/nix-cache\/catalogue\?endpoint=\S+: access denied \(InvalidAccessKeyId\); /,
          /check the AWS credentials \(AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or \?profile=\) /,
          /and the bucket policy\n$/,
        ),
        ['very-secret-value'],
      );
    });

    /**
     * Credentials from a profile's credential_process, the way temporary credentials are usually handed out; the
     * process answers with whatever `answer` holds now, so a test can let them expire and renew them.
     */
    const rotatingCredentials = () => {
      const dir = tempDir('aws');
      const answer = join(dir, 'answer.json');
      writeFileSync(join(dir, 'config'), `[profile rotating]\ncredential_process = cat ${answer}\n`);
      const credentials = (expiresInMs: number) => {
        writeFileSync(
          answer,
          JSON.stringify({
            Version: 1,
            AccessKeyId: 'S3RVER',
            SecretAccessKey: 'S3RVER',
            SessionToken: 'session-token',
            Expiration: new Date(Date.now() + expiresInMs).toISOString(),
          }),
        );
      };
      const profileEnv = {
        AWS_CONFIG_FILE: join(dir, 'config'),
        AWS_SHARED_CREDENTIALS_FILE: join(dir, 'credentials'),
        AWS_PROFILE: 'rotating',
        AWS_ACCESS_KEY_ID: '',
        AWS_SECRET_ACCESS_KEY: '',
      };
      return {
        expire: () => {
          credentials(-3_600_000);
        },
        renew: () => {
          credentials(3_600_000);
        },
        profileEnv,
      };
    };
    const expiredError = (what: string, prefix: string) =>
      `${what} in s3://${s3.bucket}/${prefix}?endpoint=${s3.endpoint}: no usable AWS credentials (Profile rotating ` +
      `credential_process returned expired credentials.); renew them, or set ` +
      `AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ?profile=`;

    it('expired credentials: push refuses and names the profile', async () => {
      const credentials = rotatingCredentials();
      credentials.expire();
      await refusedLosingNothing(
        () => push(['--to', s3Url, paths.lib], credentials.profileEnv),
        expiredError('GET nix-cache-info', s3Prefix),
      );
      credentials.renew();
      const pushed = await push(['--to', s3Url, paths.lib], credentials.profileEnv);
      assert.equal(pushed.code, 0, pushed.stderr);
    });

    it(
      'expired credentials under the daemon: it pauses using up no attempt, and uploads once they ' + 'are renewed',
      async () => {
        const credentials = rotatingCredentials();
        credentials.expire();
        const daemonEnv = {
          ...queueEnv({ ...s3.env, ...credentials.profileEnv }),
          CACHECTL_TO: s3.cacheUrl('catalogue-rotating'),
        };
        assert.equal((await cachectl(['enqueue', paths.app], daemonEnv)).code, 0);
        const daemon = startDaemon(['--secret-key-file', key.secretFile], daemonEnv);
        try {
          const waiting = await daemon.waitForLog(
            'waiting for the cache',
            (line) =>
              errOf(line).message?.startsWith(expiredError('GET nix-cache-info', 'catalogue-rotating')) === true,
          );
          // The error is logged whole: its code, its stack, and the SDK's error it came from (pino adds the causes).
          assert.equal(errOf(waiting).code, 'CACHE_ACCESS_DENIED');
          assert.match(
            errOf(waiting).stack ?? '',
            /^CachectlError: [^\n]*\n\s+at .*\ncaused by: CredentialsProviderError: /s,
          );
          const paused = await queueStatus(daemonEnv);
          assert.equal(paused.counts.failed + paused.counts.done, 0);
          assert.equal(paused.counts.inbox + paused.counts.pending, 1);
          assert.equal(
            paused.daemon.status?.pauseReason,
            `CACHE_ACCESS_DENIED: ${expiredError('GET nix-cache-info', 'catalogue-rotating')}`,
          );
          assert.deepEqual(
            queueRows(daemonEnv.CACHECTL_QUEUE).map((row) => (row as { attempts?: number }).attempts ?? 0),
            [0],
            'an attempt was used up',
          );
          credentials.renew();
          const done = await settled(daemonEnv, 1);
          assert.equal(done.counts.done, 1);
          assert.equal(done.counts.failed, 0);
          await stopDaemon(daemon);
        } finally {
          daemon.child.kill('SIGKILL');
        }
        const verify = await nixVerify(s3.nixUrl('catalogue-rotating'), key.publicKey, [paths.app]);
        assert.equal(verify.code, 0, verify.stderr);
      },
    );
  });

  describe('caches', () => {
    it('a cache made for another store directory', async () => {
      const dir = tempDir('cache');
      writeFileSync(join(dir, 'nix-cache-info'), 'StoreDir: /gnu/store\n');
      await refusedLosingNothing(
        () => push(['--to', `file://${dir}`, paths.tiny]),
        `cache file://${dir} is for the store /gnu/store, not /nix/store; use another cache`,
      );
      assert.deepEqual(Object.keys(filesUnder(dir)), ['nix-cache-info']);
    });

    it('a key that climbs out of the cache is refused by both backends before any request', async () => {
      const backends = [new FileBackend(fileCache), await openCache(parseCacheUrl(s3Url))];
      const before = await snapshot();
      for (const backend of backends) {
        for (const bad of ['../outside.narinfo', 'nar/../../x.nar', '/etc/passwd', 'nar//x.nar', 'gcroots/..']) {
          await assert.rejects(backend.put(bad, Buffer.from('x'), 'stateText'), {
            message: `refusing cache key ${JSON.stringify(bad)}: it could reach outside the cache`,
          });
          await assert.rejects(backend.get(bad), /it could reach outside the cache/);
          await assert.rejects(backend.delete([bad]), /it could reach outside the cache/);
        }
        await backend.close();
      }
      assert.equal(containedKey('nar/0abc.nar.zst'), 'nar/0abc.nar.zst');
      assert.deepEqual(await snapshot(), before);
    });
  });

  describe('deleted and corrupted store paths', () => {
    it(
      'a queued path deleted from the store before the daemon uploads it: it fails with the fix, the rest ' +
        'is uploaded',
      async () => {
        const doomed = await buildFixtures(['tiny', 'lib'], { nonce: `deleted-${Date.now()}` });
        const daemonEnv = { ...queueEnv(s3.env), CACHECTL_TO: `file://${tempDir('cache')}` };
        assert.equal((await cachectl(['enqueue', doomed.tiny, doomed.lib], daemonEnv)).code, 0);
        // enqueue rooted both; the collector may take tiny once its root is gone
        rmSync(join(daemonEnv.CACHECTL_GC_ROOTS, doomed.tiny.slice('/nix/store/'.length)));
        const deleted = await run('nix-store', ['--delete', doomed.tiny]);
        assert.equal(deleted.code, 0, deleted.stderr);
        const daemon = startDaemon(['--secret-key-file', key.secretFile], daemonEnv);
        try {
          const report = await settled(daemonEnv, 2);
          assert.deepEqual([report.counts.done, report.counts.failed], [1, 1]);
          await stopDaemon(daemon);
        } finally {
          daemon.child.kill('SIGKILL');
        }
        const rows = queueRows(daemonEnv.CACHECTL_QUEUE) as {
          store_path: string;
          state: string;
          last_error: string | null;
        }[];
        assert.deepEqual(
          rows.map((row) => [row.store_path, row.state, row.last_error]),
          [
            [doomed.lib, 'done', null],
            [
              doomed.tiny,
              'failed',
              `PATH_NOT_VALID: ${doomed.tiny} is no longer in the local Nix store (deleted before it was uploaded); ` +
                `build it again, then run cachectl retry`,
            ],
          ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
        );
      },
    );

    for (const target of ['file', 's3'] as const) {
      it(`is refused on ${target}://, with its dependents, and nothing of it is published`, async () => {
        const nonce = `corrupt-${target}-${Date.now()}`;
        const paths = await buildFixtures(['top', 'lib', 'big'], { nonce, bigMb: 40 });
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
        const report = JSON.parse(result.stdout) as {
          uploaded: string[];
          failed: { path: string; code: string; message: string }[];
        };
        const failed = Object.fromEntries(report.failed.map((f) => [f.path, f]));
        for (const path of [paths.lib, paths.big]) {
          assert.equal(failed[path]?.code, 'NAR_HASH_MISMATCH');
          assert.match(
            failed[path]?.message ?? '',
            /does not match the Nix database .* the store path is corrupt; repair it with nix-store --repair-path/,
          );
        }
        const app = (await nixClosure([paths.top])).find((p) => p.endsWith(`-cachectl-app-${nonce}`)) as string;
        for (const path of [app, paths.top]) assert.equal(failed[path]?.code, 'DEPENDENCY_FAILED');
        assert.deepEqual(report.uploaded, []);
        // Nothing of the corrupt paths exists in the cache: no narinfo, no NAR, no temp file, no multipart leftovers.
        const hashPart = (path: string) => path.slice(11, 43);
        let keys: string[];
        if (target === 'file') {
          keys = Object.keys(filesUnder(dir));
        } else {
          const listing = await (await fetch(`${s3.httpUrl}?list-type=2&prefix=${nonce}/`)).text();
          keys = [...listing.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => (m[1] as string).slice(nonce.length + 1));
        }
        assert.ok(keys.includes('nix-cache-info'));
        assert.deepEqual(
          keys.filter((key) => key.includes(TEMP_PREFIX)),
          [],
          'temp files were left behind',
        );
        for (const path of [paths.lib, app, paths.top, paths.big])
          assert.ok(!keys.includes(`${hashPart(path)}.narinfo`), path);
        // The corrupt paths' NARs (keyed by the NarHash Nix recorded) were never completed.
        for (const path of [paths.lib, paths.big]) {
          const narHash = (await run('nix-store', ['-q', '--hash', path])).stdout.trim().slice('sha256:'.length);
          assert.ok(!keys.includes(`nar/${narHash}.nar.zst`), `the NAR of ${path} was published`);
        }
      });
    }
  });

  describe("the post-build hook's OUT_PATHS", () => {
    /** The hook with a good path among bad words: exit 0, one line for each bad word, and the good path queued. */
    async function hookIgnores(bad: string[], separator = ' '): Promise<void> {
      const hookEnv = queueEnv();
      const queue = createQueue(hookEnv);
      const result = await runHook(hookEnv, { OUT_PATHS: [...bad, paths.tiny].join(separator) });
      assertHookSays(
        result,
        bad.map((word) => `ignoring ${JSON.stringify(word)} from OUT_PATHS: not a store path`),
      );
      assert.deepEqual(inbox(queue), [paths.tiny]);
    }

    it('a relative path', () => hookIgnores(['relative/path']));
    it('.. climbing out of the store', () => hookIgnores(['/nix/store/../etc/passwd']));
    it('a path outside the store', () => hookIgnores(['/tmp/not-the-store']));
    it('a file inside a store path', () => hookIgnores([`${paths.lib}/lib`]));
    it('quotes, SQL and shell substitutions', async () => {
      await hookIgnores(["/nix/store/x';DROP_TABLE_inbox;--", '/nix/store/$(touch${IFS}/tmp/cachectl-pwned)`id`']);
      assert.ok(!existsSync('/tmp/cachectl-pwned'), 'the hook ran a substitution');
    });
    it('a name with a space splits into words, each ignored', () => hookIgnores(['/nix/store/0000-has', 'space']));

    it('newlines and runs of spaces between paths are separators: every path is queued, nothing said', async () => {
      const hookEnv = queueEnv();
      const queue = createQueue(hookEnv);
      const result = await runHook(hookEnv, { OUT_PATHS: `\n  ${paths.tiny}\n\n\t${paths.lib}   \n` });
      assertHookSays(result, []);
      assert.deepEqual(inbox(queue), [paths.tiny, paths.lib]);
    });

    it('an empty OUT_PATHS and a DRV_PATH that is not a store path: nothing to queue, exit 0', async () => {
      const hookEnv = queueEnv();
      const queue = createQueue(hookEnv);
      const result = await runHook(hookEnv, { OUT_PATHS: '', DRV_PATH: '/tmp/x.drv' });
      assertHookSays(result, ['nothing to queue: OUT_PATHS is empty and DRV_PATH ("/tmp/x.drv") is not a store path']);
      assert.deepEqual(inbox(queue), []);
    });
  });

  describe('what GC finds in the bucket', () => {
    it(
      'narinfos whose URL or references climb out of the layout: reported, kept, and nothing ' + 'outside touched',
      async () => {
        const prefix = `gc-crafted-${Date.now()}`;
        const url = s3.cacheUrl(prefix);
        const backend = await openCache(parseCacheUrl(url));
        // What a crafted narinfo points at: an object of another prefix, and one at the bucket's top level.
        const victims = [`other-${prefix}/nar/victim.nar`, `${prefix}-sibling.narinfo`];
        for (const victim of victims) {
          const response = await fetch(`${s3.httpUrl}/${victim}`, { method: 'PUT', body: 'precious' });
          assert.equal(response.status, 200);
        }
        const crafted: Record<string, string> = {
          [`${'1'.repeat(32)}.narinfo`]: `URL: ../other-${prefix}/nar/victim.nar`,
          [`${'2'.repeat(32)}.narinfo`]: `URL: nar/../../other-${prefix}/nar/victim.nar`,
          [`${'3'.repeat(32)}.narinfo`]: `URL: nar/${'3'.repeat(52)}.nar\nReferences: ../../${prefix}-sibling`,
        };
        for (const [narinfo, fields] of Object.entries(crafted)) {
          const storePath = `/nix/store/${narinfo.slice(0, 32)}-crafted`;
          await backend.put(
            narinfo,
            Buffer.from(`StorePath: ${storePath}\n${fields}\nNarHash: sha256:${'0'.repeat(52)}\nNarSize: 8\n`),
            'narinfo',
          );
        }
        const before = await objectsUnder(s3, '');
        const result = await cachectl(['gc', '--to', url, '--older-than', '0s', '--grace', '0s', '--json'], env);
        assert.equal(result.code, 0, result.stderr);
        const report = JSON.parse(result.stdout) as { problems: string[]; deleted: { narinfos: { count: number } } };
        assert.deepEqual(report.problems.sort(), [
          `${'1'.repeat(32)}.narinfo: narinfo ${'1'.repeat(32)}.narinfo is malformed: URL ` +
            `"../other-${prefix}/nar/victim.nar" is not a nar/ key; kept`,
          `${'2'.repeat(32)}.narinfo: narinfo ${'2'.repeat(32)}.narinfo is malformed: URL ` +
            `"nar/../../other-${prefix}/nar/victim.nar" is not a nar/ key; kept`,
          `${'3'.repeat(32)}.narinfo: narinfo ${'3'.repeat(32)}.narinfo is malformed: reference ` +
            `"../../${prefix}-sibling" is not a store path base name: it does not have the form <32-character ` +
            `hash>-<name> (line 3); kept`,
        ]);
        assert.equal(report.deleted.narinfos.count, 0);
        assert.deepEqual(await objectsUnder(s3, ''), before, 'GC deleted or changed something');
        await backend.close();
      },
    );

    it(
      'a cache under a prefix shares its bucket with other caches: GC empties its own and leaves ' + 'theirs alone',
      async () => {
        const prefix = `gc-shared-${Date.now()}`;
        // Caches of the same paths at the bucket's top level, under a sibling prefix, and under a nested one.
        const neighbours = ['', `${prefix}-sibling`, `${prefix}x`, `${prefix}/nested`];
        for (const neighbour of [prefix, ...neighbours]) {
          const pushed = await push(['--to', neighbour === '' ? s3.cacheUrl() : s3.cacheUrl(neighbour), paths.app]);
          assert.equal(pushed.code, 0, pushed.stderr);
        }
        const theirs = async () =>
          Object.fromEntries(
            Object.entries(await objectsUnder(s3, '')).filter(
              ([key]) => !key.startsWith(`${prefix}/`) || key.startsWith(`${prefix}/nested/`),
            ),
          );
        const before = await theirs();
        const backend = await openCache(parseCacheUrl(s3.cacheUrl(prefix)));
        await dropLeases(backend);
        await backend.close();
        const result = await cachectl(
          ['gc', '--to', s3.cacheUrl(prefix), '--older-than', '0s', '--grace', '0s', '--json'],
          env,
        );
        assert.equal(result.code, 0, result.stderr);
        const report = JSON.parse(result.stdout) as { deleted: { narinfos: { count: number } }; foreign: string[] };
        assert.equal(report.deleted.narinfos.count, (await nixClosure([paths.app])).length);
        assert.deepEqual(report.foreign, []);
        assert.deepEqual(
          Object.keys(await objectsUnder(s3, `${prefix}/`)).filter((key) => !key.startsWith(`${prefix}/nested/`)),
          [`${prefix}/nix-cache-info`],
        );
        assert.deepEqual(await theirs(), before, "GC touched another cache's objects");
      },
    );

    it('a pin name that climbs out of gcroots/', () =>
      refusedLosingNothing(
        () => cachectl(['pin', '--to', fileUrl, '../../evil', paths.tiny], env),
        `pin name "../../evil" is not allowed; use letters, digits, '.', '_' and '-' (not first), at most 128`,
      ));
  });
});
