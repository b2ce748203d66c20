import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { progressLine } from '../src/cli/progress.js';
import { ERROR_CODES } from '../src/core/errors.js';
import { PUSH_REPORT_CODES } from '../src/upload/push.js';
import { OPTIONS, optionHelp, type OptionKey, type OptionSpec } from '../src/core/options.js';
import { buildFixtures, cachectl, CACHECTL, requireNix, run, testEnv, tempDir, withNix } from './helpers/nix.js';
import { regex } from './helpers/regex.js';

describe(withNix('cachectl keygen'), () => {
  before(requireNix);

  it('writes a secret key Nix reads, mode 0600, and prints the public key Nix derives from it', async () => {
    const dir = tempDir('keygen');
    const secretFile = join(dir, 'cache.sec');
    const result = await cachectl(['keygen', 'cache.example.org-1', '--secret-key-file', secretFile]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^cache\.example\.org-1:[A-Za-z0-9+/]{43}=\n$/);
    assert.equal(statSync(secretFile).mode & 0o777, 0o600);
    assert.equal(readFileSync(`${secretFile}.pub`, 'utf8'), result.stdout);
    assert.ok(
      !result.stdout.includes(readFileSync(secretFile, 'utf8').split(':')[1] as string),
      'the secret was printed',
    );
    const nix = await run('sh', ['-c', `nix key convert-secret-to-public < '${secretFile}'`]);
    assert.equal(nix.code, 0, nix.stderr);
    assert.equal(`${nix.stdout.trim()}\n`, result.stdout);
  });

  it('never overwrites a key file, and leaves nothing behind when it refuses', async () => {
    const dir = tempDir('keygen');
    const secretFile = join(dir, 'cache.sec');
    writeFileSync(secretFile, 'precious');
    const result = await cachectl(['keygen', 'k-1', '--secret-key-file', secretFile]);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /cannot create key file .*cache\.sec: it already exists; remove it or choose another file/,
    );
    assert.equal(readFileSync(secretFile, 'utf8'), 'precious');

    const other = join(dir, 'other.sec');
    writeFileSync(`${other}.pub`, 'old public key');
    assert.equal((await cachectl(['keygen', 'k-1', '--secret-key-file', other])).code, 1);
    assert.throws(() => statSync(other), /ENOENT/, 'a secret key without its public half was left behind');
    assert.equal(readFileSync(`${other}.pub`, 'utf8'), 'old public key');
  });

  it('refuses a key name Nix could not parse back', async () => {
    const dir = tempDir('keygen');
    const result = await cachectl(['keygen', 'a:b', '--secret-key-file', join(dir, 'k.sec')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /key name "a:b" must be non-empty, without ':' or spaces/);
  });
});

describe('cachectl push output', () => {
  before(requireNix);

  it('draws a progress line on a terminal and prints one summary line otherwise', async () => {
    const { top } = await buildFixtures(['top']);
    const tty = await run('script', [
      '-qfec',
      `${process.execPath} ${CACHECTL} push --to file://${tempDir('tty')} ${top}`,
      '/dev/null',
    ]);
    assert.equal(tty.code, 0, tty.stderr);
    // eslint-disable-next-line no-control-regex -- the terminal's erase-line sequence, on purpose
    assert.match(tty.stdout, /\r\x1b\[Kpaths 3\/3 {2}[0-9.]+ KiB\/[0-9.]+ KiB {2}[0-9.]+ [KMG]?i?B\/s/);
    const plain = await cachectl(['push', '--to', `file://${tempDir('plain')}`, top]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stderr, '');
    assert.match(
      plain.stdout,
      regex(
        /^pushed 3 paths \([0-9.]+ KiB NAR, [0-9.]+ (KiB|B) zstd\) to file:\/\/\S+ in [0-9.]+ s \([^)]*\/s\); /,
        /0 of 3 already there\n$/,
      ),
    );
  });

  it('formats the progress line', () => {
    const line = progressLine(
      { pathsTotal: 10, pathsDone: 4, narBytesTotal: 3 * 1024 ** 3, narBytesDone: 1536 * 1024 ** 2 },
      2000,
    );
    assert.equal(line, 'paths 4/10  1.5 GiB/3.0 GiB  768.0 MiB/s');
  });

  it('has every error code in the table of docs/errors.md, and no code the program lacks', () => {
    const table = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const documented = [...table.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]).sort();
    assert.deepEqual(documented, [...ERROR_CODES, ...PUSH_REPORT_CODES].sort());
  });

  it('prints its version and explains itself', async () => {
    const version = await cachectl(['--version'], testEnv());
    assert.equal(
      version.stdout.trim(),
      (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version,
    );
    const help = await cachectl(['push', '--help']);
    for (const option of ['--to', '--secret-key-file', '--jobs', '--compression', '--config', '--json', 'Examples:']) {
      assert.ok(help.stdout.includes(option), option);
    }
  });

  it("gives libuv's thread pool 16 threads, unless UV_THREADPOOL_SIZE is given", async () => {
    // The probe, loaded before the entry, only reports at exit what the pool was started with.
    const probe = join(tempDir('pool-probe'), 'probe.cjs');
    writeFileSync(
      probe,
      `process.on('exit', () => require('node:fs').writeSync(2, 'pool=' + process.env.UV_THREADPOOL_SIZE + '\\n'));\n`,
    );
    const poolOf = async (env: NodeJS.ProcessEnv) => {
      const result = await run(process.execPath, ['--require', probe, CACHECTL, '--version'], env);
      assert.equal(result.code, 0, result.stderr);
      return /pool=(\S+)/.exec(result.stderr)?.[1];
    };
    const { UV_THREADPOOL_SIZE: _given, ...env } = testEnv();
    assert.equal(await poolOf(env), '16');
    assert.equal(await poolOf({ ...env, UV_THREADPOOL_SIZE: '3' }), '3');
  });

  it(
    'shows each setting in --help as core/options.ts declares it: environment variable, config ' + 'key, default',
    async () => {
      const commands = ['push', 'daemon', 'enqueue', 'status', 'retry', 'gc', 'verify', 'pin', 'unpin', 'pins'];
      const helps = await Promise.all(
        commands.map(async (command) => (await cachectl([command, '--help'])).stdout.replace(/\s+/g, ' ')),
      );
      for (const [key, spec] of Object.entries(OPTIONS) as [OptionKey, OptionSpec][]) {
        const flag = spec.flag.split(' ')[0] ?? '';
        const taking = helps.filter((help) => help.includes(`${flag} `));
        assert.ok(taking.length > 0, `no command takes ${flag}`);
        for (const help of taking) assert.ok(help.includes(optionHelp(key)), `${flag}: ${optionHelp(key)}`);
      }
    },
  );
});
