import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { StatusReport } from '../src/cli/status.js';
import { DRAIN_MS } from '../src/daemon/daemon.js';
import { parseDuration } from '../src/core/duration.js';
import { notifyReceiver, queueEnv, startDaemon, waitFor } from './helpers/daemon.js';
import { buildFixtures, CACHECTL, cachectl, newKey, nixVerify, onExit, REPO, requireNix, run, tempDir, testEnv, type Key } from './helpers/nix.js';

const UNITS = ['cachectl.service', 'cachectl-gc.service', 'cachectl-gc.timer'];
/** Where the shipped units expect the program; the tests put a stand-in there. */
const INSTALLED_CACHECTL = '/usr/local/bin/cachectl';

/** A unit file as section → key → values (a key may repeat). */
type Unit = Record<string, Record<string, string[]>>;

function readUnit(name: string): Unit {
  const unit: Unit = {};
  let section: Record<string, string[]> | undefined;
  for (const line of readFileSync(join(REPO, 'systemd', name), 'utf8').split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header !== null) {
      section = unit[header[1] as string] = {};
    } else if (line !== '' && !line.startsWith('#')) {
      const at = line.indexOf('=');
      assert.ok(section !== undefined && at > 0, `${name}: "${line}" is not KEY=VALUE in a section`);
      (section[line.slice(0, at)] ??= []).push(line.slice(at + 1));
    }
  }
  return unit;
}

function one(unit: Unit, section: string, key: string): string {
  const values = unit[section]?.[key] ?? [];
  assert.equal(values.length, 1, `[${section}] ${key} should be set once, is ${JSON.stringify(values)}`);
  return values[0] as string;
}

/** An executable that runs this checkout's cachectl with the same pid (exec), standing in for the installed one. */
function standInCachectl(): string {
  const file = join(tempDir('bin'), 'cachectl');
  writeFileSync(file, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CACHECTL)} "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

/** Prometheus text format: `name{labels} value` samples, each metric after its HELP and TYPE. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.trimEnd().split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-z_]+) (.+)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3] as string, /^(gauge|counter|histogram)$/);
        typed.add(meta[2] as string);
      }
      continue;
    }
    const sample = /^([a-z_]+?)(_bucket|_sum|_count)?(\{[a-z]+="[^"]*"\})? (-?\d+(?:\.\d+)?)$/.exec(line);
    assert.ok(sample !== null, `not a Prometheus sample: ${line}`);
    const family = typed.has(`${sample[1]}${sample[2] ?? ''}`) ? `${sample[1]}${sample[2] ?? ''}` : (sample[1] as string);
    assert.ok(typed.has(family), `${line}: no TYPE line before it`);
    samples.set(`${sample[1]}${sample[2] ?? ''}${sample[3] ?? ''}`, Number(sample[4]));
  }
  return samples;
}

async function statusJson(env: NodeJS.ProcessEnv): Promise<StatusReport> {
  const result = await cachectl(['status', '--json'], env);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as StatusReport;
}

describe('operations: systemd units, metrics', () => {
  it('every unit passes systemd-analyze verify without a warning, with a stand-in cachectl', async () => {
    const dir = tempDir('units');
    const standIn = standInCachectl();
    for (const name of UNITS) {
      writeFileSync(join(dir, name), readFileSync(join(REPO, 'systemd', name), 'utf8').replaceAll(INSTALLED_CACHECTL, standIn));
    }
    const result = await run('systemd-analyze', ['verify', '--man=no', ...UNITS.map((name) => join(dir, name))]);
    assert.deepEqual({ code: result.code, stderr: result.stderr }, { code: 0, stderr: '' });
  });

  it('the daemon unit has what the daemon needs: notify, watchdog, a stop timeout beyond the drain, no MemoryDenyWriteExecute', () => {
    const unit = readUnit('cachectl.service');
    assert.equal(one(unit, 'Service', 'Type'), 'notify');
    // systemd-notify sends from its own pid
    assert.equal(one(unit, 'Service', 'NotifyAccess'), 'all');
    assert.equal(one(unit, 'Service', 'KillMode'), 'mixed');
    assert.equal(one(unit, 'Service', 'Restart'), 'on-failure');
    assert.equal(one(unit, 'Service', 'StateDirectory'), 'cachectl');
    assert.ok(parseDuration(one(unit, 'Service', 'WatchdogSec'), 'WatchdogSec') >= 10_000);
    assert.ok(parseDuration(one(unit, 'Service', 'TimeoutStopSec'), 'TimeoutStopSec') > DRAIN_MS, 'TimeoutStopSec must exceed the drain');
    const [credential, source] = one(unit, 'Service', 'LoadCredential').split(':');
    assert.ok(one(unit, 'Service', 'ExecStart').includes(`--secret-key-file %d/${credential}`), 'the key comes from the credential');
    assert.equal(source, '/etc/cachectl/signing-key');
    for (const name of UNITS) {
      assert.doesNotMatch(readFileSync(join(REPO, 'systemd', name), 'utf8'), /^MemoryDenyWriteExecute=(yes|true|1|on)/m, `${name}: Node's JIT needs W+X pages`);
    }
    const timer = readUnit('cachectl-gc.timer');
    assert.equal(one(timer, 'Timer', 'OnCalendar'), 'daily');
    assert.ok(parseDuration(one(timer, 'Timer', 'RandomizedDelaySec'), 'RandomizedDelaySec') > 0);
    assert.match(one(readUnit('cachectl-gc.service'), 'Service', 'ExecStart'), new RegExp(`^${INSTALLED_CACHECTL} gc --config /etc/cachectl/config.json `));
  });

  describe('with Nix', () => {
    let key: Key;
    before(async () => {
      requireNix();
      key = await newKey('cachectl-unit-test-1');
    });

    it('the daemon started as the unit starts it: READY, STATUS, WATCHDOG pings, a hook-queued path uploaded, a clean stop', async () => {
      const unit = readUnit('cachectl.service');
      const etc = tempDir('etc');
      const state = tempDir('state');
      const credentials = tempDir('credentials');
      const gcRoots = mkdtempSync('/nix/var/nix/gcroots/cachectl-unit-test-');
      onExit(() => rmSync(gcRoots, { recursive: true, force: true }));
      rmSync(gcRoots, { recursive: true });
      const cacheDir = tempDir('unit-cache');
      // The unit's paths, here.
      const local = (text: string): string =>
        text
          .replaceAll(INSTALLED_CACHECTL, standInCachectl())
          .replaceAll('/etc/cachectl', etc)
          .replaceAll('/var/lib/cachectl', state)
          .replaceAll('/nix/var/nix/gcroots/cachectl', gcRoots)
          .replaceAll('%d', credentials);
      writeFileSync(join(etc, 'config.json'), JSON.stringify({ to: `file://${cacheDir}`, jobs: 4 }));
      copyFileSync(key.secretFile, join(etc, 'signing-key'));
      // systemd copies each LoadCredential= source into $CREDENTIALS_DIRECTORY, readable by the service only.
      const [credential, source] = one(unit, 'Service', 'LoadCredential').split(':') as [string, string];
      copyFileSync(local(source), join(credentials, credential));
      chmodSync(join(credentials, credential), 0o400);

      for (const command of unit['Service']?.['ExecStartPre'] ?? []) {
        const [program, ...args] = local(command.replace(/^[+!-]+/, '')).split(' ');
        assert.equal((await run(program as string, args)).code, 0, command);
      }
      const receiver = await notifyReceiver();
      try {
        const unitEnv = Object.fromEntries((unit['Service']?.['Environment'] ?? []).map((assignment) => local(assignment).split('=', 2) as [string, string]));
        const env = testEnv({ ...unitEnv, NOTIFY_SOCKET: receiver.socket, WATCHDOG_USEC: '400000', CREDENTIALS_DIRECTORY: credentials, STATE_DIRECTORY: state });
        const [program, ...args] = local(one(unit, 'Service', 'ExecStart')).split(' ');
        const daemon = spawn(program as string, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
        onExit(() => daemon.kill('SIGKILL'));
        let stderr = '';
        daemon.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
        const exited = new Promise((resolve) => daemon.once('exit', (code, signal) => resolve({ code, signal })));
        await waitFor('READY=1', () => (receiver.has('READY=1') ? true : undefined), 30_000, () => stderr);
        await waitFor('two WATCHDOG=1', () => (receiver.messages.filter((m) => m.includes('WATCHDOG=1')).length >= 2 ? true : undefined), 20_000);
        assert.ok(receiver.messages.every((m) => m === 'BARRIER=1' || m.startsWith(`MAINPID=${daemon.pid}|`)), receiver.messages.join('\n'));

        // A build's output, queued by the hook with the unit's queue, arrives signed with the credential's key.
        const { tiny } = await buildFixtures(['tiny'], { nonce: `unit-${Date.now()}` });
        const hook = await run(join(REPO, 'hook/post-build-hook'), [], { ...env, OUT_PATHS: tiny });
        assert.deepEqual({ code: hook.code, stderr: hook.stderr }, { code: 0, stderr: '' });
        await waitFor('the narinfo', () => (existsSync(join(cacheDir, `${tiny.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`)) ? true : undefined));
        const verify = await nixVerify(`file://${cacheDir}`, key.publicKey, [tiny]);
        assert.equal(verify.code, 0, verify.stderr);
        await waitFor('STATUS with the upload', () => (receiver.has('STATUS=idle: 0 pending, 0 uploading, 1 done, 0 failed') ? true : undefined), 10_000);

        // systemctl stop with KillMode=mixed: SIGTERM to the main process.
        daemon.kill('SIGTERM');
        assert.deepEqual(await exited, { code: 0, signal: null }, stderr);
        await waitFor('STOPPING=1', () => (receiver.has('STOPPING=1') ? true : undefined), 10_000);
        assert.equal(stderr, '');
        assert.ok(readdirSync(state).includes('queue.db'), 'the queue is in the StateDirectory');
      } finally {
        receiver.close();
      }
    });

    it('GET /metrics answers in Prometheus text format with the numbers of cachectl status --json; /healthz says idle', async () => {
      const env = queueEnv();
      const cacheDir = tempDir('metrics-cache');
      const to = `file://${cacheDir}`;
      const paths = await buildFixtures(['tiny', 'lib'], { nonce: `metrics-${Date.now()}` });
      const daemon = startDaemon(['--to', to, '--secret-key-file', key.secretFile, '--metrics-listen', '127.0.0.1:0'], env);
      try {
        const serving = await daemon.waitForLog('serving metrics');
        const base = String(serving['metrics']).replace(/\/metrics$/, '');
        assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
        await daemon.waitForLog('ready');
        assert.equal((await cachectl(['enqueue', paths.tiny, paths.lib], env)).code, 0);
        // A path the local store does not have fails at once (PATH_NOT_VALID).
        const gone = '/nix/store/00000000000000000000000000000000-cachectl-metrics-gone';
        const sqlite = await run('sqlite3', [String(env.CACHECTL_QUEUE), `INSERT INTO inbox (store_path, source, enqueued_at) VALUES ('${gone}', 'cli', 0)`]);
        assert.equal(sqlite.code, 0, sqlite.stderr);
        const gc = await cachectl(['gc', '--to', to, '--older-than', '0s', '--grace', '0s', '--dry-run'], env);
        assert.equal(gc.code, 0, gc.stderr);

        // The daemon's counters reach status through its heartbeat (every 2 s): wait until both agree.
        const { metrics, report } = await waitFor('metrics and status to settle', async () => {
          const report = await statusJson(env);
          const response = await fetch(`${base}/metrics`);
          assert.equal(response.status, 200);
          assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
          const metrics = parseMetrics(await response.text());
          const settled = report.counts.done === 2 && report.counts.failed === 1 && report.daemon.status?.['uploadedPaths'] === metrics.get('cachectl_uploaded_paths_total');
          return settled ? { metrics, report } : undefined;
        });
        for (const state of ['inbox', 'pending', 'uploading', 'done', 'failed'] as const) {
          assert.equal(metrics.get(`cachectl_queue_paths{state="${state}"}`), report.counts[state], state);
        }
        assert.equal(metrics.get('cachectl_spool_files'), report.counts.spoolFiles);
        assert.equal(metrics.get('cachectl_oldest_pending_seconds'), report.oldestPendingSeconds ?? 0);
        const daemonStatus = report.daemon.status ?? {};
        assert.equal(metrics.get('cachectl_uploaded_paths_total'), daemonStatus['uploadedPaths']);
        assert.ok((metrics.get('cachectl_uploaded_paths_total') ?? 0) >= 2);
        assert.equal(metrics.get('cachectl_uploaded_nar_bytes_total'), daemonStatus['uploadedNarBytes']);
        assert.equal(metrics.get('cachectl_uploaded_file_bytes_total'), daemonStatus['uploadedFileBytes']);
        assert.equal(metrics.get('cachectl_upload_failures_total{code="PATH_NOT_VALID"}'), 1);
        assert.equal(daemonStatus['failedAttempts'], 1);
        assert.equal(metrics.get('cachectl_upload_retries_total'), daemonStatus['retries']);
        assert.equal(metrics.get('cachectl_daemon_state{state="idle"}'), 1);
        assert.ok((metrics.get('cachectl_upload_duration_seconds_count') ?? 0) >= 1);
        assert.equal(metrics.get('cachectl_upload_duration_seconds_bucket{le="+Inf"}'), metrics.get('cachectl_upload_duration_seconds_count'));
        // The GC run recorded itself in the queue.
        const lastGc = report.lastGc;
        assert.ok(lastGc !== null && lastGc.ok && lastGc.dryRun);
        assert.equal(metrics.get('cachectl_gc_last_run_timestamp_seconds'), lastGc.finishedAt / 1000);
        assert.equal(metrics.get('cachectl_gc_last_run_success'), 1);
        assert.equal(metrics.get('cachectl_gc_last_run_deleted_objects'), lastGc.deletedObjects);
        assert.equal(metrics.get('cachectl_gc_last_run_deleted_bytes'), lastGc.deletedBytes);
        assert.match((await cachectl(['status'], env)).stdout, /^last gc: \d+ s ago on file:\/\/\S+: would delete \d+ objects \([\d.]+ [KMG]?i?B\), took [\d.]+ s$/m);

        const health = await fetch(`${base}/healthz`);
        assert.deepEqual({ status: health.status, text: await health.text() }, { status: 200, text: 'idle\n' });
        assert.equal((await fetch(`${base}/nothing`)).status, 404);
      } finally {
        daemon.child.kill('SIGTERM');
        assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.stderr());
      }
    });

    it('a metrics address it cannot use, or a malformed one, stops the daemon before it starts, naming the option', async () => {
      const env = queueEnv();
      const malformed = await cachectl(['daemon', '--to', `file://${tempDir('c')}`, '--metrics-listen', 'localhost:http'], env);
      assert.equal(malformed.code, 1);
      assert.match(malformed.stderr, /^cachectl: metrics-listen "localhost:http" must be PORT, HOST:PORT or \[IPV6\]:PORT, such as 127\.0\.0\.1:9108\n$/);
      const first = startDaemon(['--to', `file://${tempDir('c')}`, '--metrics-listen', '127.0.0.1:0'], env);
      try {
        const port = String((await first.waitForLog('serving metrics'))['metrics']).match(/:(\d+)\/metrics$/)?.[1];
        const taken = await cachectl(['daemon', '--to', `file://${tempDir('c')}`, '--queue', join(tempDir('q'), 'queue.db'), '--metrics-listen', `127.0.0.1:${port}`], env);
        assert.equal(taken.code, 1);
        assert.match(taken.stderr, /^cachectl: cannot serve metrics on 127\.0\.0\.1:\d+: .*EADDRINUSE.*; pick another --metrics-listen address\n$/);
      } finally {
        first.child.kill('SIGTERM');
        await first.exited;
      }
    });
  });
});
