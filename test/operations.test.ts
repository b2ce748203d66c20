import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { DRAIN_MS } from '../src/daemon/daemon.js';
import { CONFIG_KEYS, resolveConfig } from '../src/core/config.js';
import { parseDuration } from '../src/core/duration.js';
import {
  HOOK,
  notifyReceiver,
  queueEnv,
  queueStatus,
  startDaemon,
  waitFor,
  type NotifyReceiver,
} from './helpers/daemon.js';
import {
  buildFixtures,
  CACHECTL,
  cachectl,
  newKey,
  nixVerify,
  onExit,
  REPO,
  requireNix,
  run,
  stopWhenDone,
  tempDir,
  testEnv,
  type Key,
  withNix,
} from './helpers/nix.js';
import { regex } from './helpers/regex.js';
import { parseExposition } from './helpers/metrics.js';

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

/** The words of an Exec*= line, without systemd's prefixes (`-` ignore failure, `+` `!` privileges: we are root). */
function execWords(line: string): [string, ...string[]] {
  return line
    .replace(/^[-+!]+/, '')
    .trim()
    .split(' ') as [string, ...string[]];
}

/** What a service runs, from a unit file or from the NixOS module's serviceConfig. */
interface ServiceSpec {
  execStartPre: string[];
  execStart: string;
  environment: Record<string, string>;
  loadCredential: string[];
}

function unitService(unit: Unit): ServiceSpec {
  return {
    execStartPre: unit['Service']?.['ExecStartPre'] ?? [],
    execStart: one(unit, 'Service', 'ExecStart'),
    environment: Object.fromEntries(
      (unit['Service']?.['Environment'] ?? []).map((assignment) => [
        assignment.slice(0, assignment.indexOf('=')),
        assignment.slice(assignment.indexOf('=') + 1),
      ]),
    ),
    loadCredential: unit['Service']?.['LoadCredential'] ?? [],
  };
}

/**
 * Starts a service the way systemd would, with its paths mapped by `local`: each LoadCredential= source copied
 * into a credentials directory (%d, mode 0400), the ExecStartPre= commands run (their prefixes ignored: we are
 * root), then ExecStart= with the service's environment, a real NOTIFY_SOCKET and WATCHDOG_USEC.
 */
async function startService(service: ServiceSpec, local: (text: string) => string, notifySocket: string) {
  const credentials = tempDir('credentials');
  const mapped = (text: string) => local(text).replaceAll('%d', credentials);
  for (const entry of service.loadCredential) {
    const [name, source] = entry.split(':') as [string, string];
    copyFileSync(mapped(source), join(credentials, name));
    chmodSync(join(credentials, name), 0o400);
  }
  for (const command of service.execStartPre) {
    const [program, ...args] = execWords(mapped(command));
    assert.equal((await run(program, args)).code, 0, command);
  }
  const env = testEnv({
    ...Object.fromEntries(Object.entries(service.environment).map(([name, value]) => [name, mapped(value)])),
    NOTIFY_SOCKET: notifySocket,
    WATCHDOG_USEC: '400000',
    CREDENTIALS_DIRECTORY: credentials,
  });
  const [program, ...args] = execWords(mapped(service.execStart));
  const child = spawn(program, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  stopWhenDone(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
    }),
  );
  return { child, env, exited, stderr: () => stderr };
}

/**
 * Checks a started daemon service end to end: READY, WATCHDOG pings from the main pid, `path` queued by
 * `hook` arrives in `cacheDir` signed with `key`, STATUS counts it, SIGTERM
 * (KillMode=mixed) stops it cleanly with STOPPING=1.
 */
async function checkDaemonService(
  service: Awaited<ReturnType<typeof startService>>,
  receiver: NotifyReceiver,
  hook: { program: string; args: string[]; env: NodeJS.ProcessEnv },
  path: string,
  cacheDir: string,
  key: Key,
): Promise<void> {
  const { child, exited, stderr } = service;
  await waitFor('READY=1', () => (receiver.has('READY=1') ? true : undefined), 30_000, stderr);
  await waitFor(
    'two WATCHDOG=1',
    () => (receiver.messages.filter((m) => m.includes('WATCHDOG=1')).length >= 2 ? true : undefined),
    20_000,
  );

  const queued = await run(hook.program, hook.args, { ...hook.env, OUT_PATHS: path });
  assert.deepEqual({ code: queued.code, stderr: queued.stderr }, { code: 0, stderr: '' });
  await waitFor('the narinfo', () =>
    existsSync(join(cacheDir, `${path.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`))
      ? true
      : undefined,
  );
  const verify = await nixVerify(`file://${cacheDir}`, key.publicKey, [path]);
  assert.equal(verify.code, 0, verify.stderr);
  await waitFor(
    'STATUS with the upload',
    () => (receiver.has('STATUS=idle: 0 pending, 0 uploading, 1 done, 0 failed') ? true : undefined),
    10_000,
  );

  child.kill('SIGTERM');
  assert.deepEqual(await exited, { code: 0, signal: null }, stderr());
  await waitFor('STOPPING=1', () => (receiver.has('STOPPING=1') ? true : undefined), 10_000);
  assert.equal(stderr(), '');
}

/** A GC-roots directory Nix's collector scans, not yet created: the hook makes it, as on a fresh machine. */
function newGcRootsDir(): string {
  const dir = mkdtempSync('/nix/var/nix/gcroots/cachectl-service-test-');
  onExit(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  rmSync(dir, { recursive: true });
  return dir;
}

describe('operations: systemd units, metrics', () => {
  it('every unit passes systemd-analyze verify without a warning, with a stand-in cachectl', async () => {
    const dir = tempDir('units');
    const standIn = standInCachectl();
    for (const name of UNITS) {
      writeFileSync(
        join(dir, name),
        readFileSync(join(REPO, 'systemd', name), 'utf8').replaceAll(INSTALLED_CACHECTL, standIn),
      );
    }
    const result = await run('systemd-analyze', ['verify', '--man=no', ...UNITS.map((name) => join(dir, name))]);
    assert.deepEqual({ code: result.code, stderr: result.stderr }, { code: 0, stderr: '' });
  });

  it(
    'the daemon unit has what the daemon needs: notify, watchdog, a stop timeout beyond the drain, no ' +
      'MemoryDenyWriteExecute',
    () => {
      const unit = readUnit('cachectl.service');
      assert.equal(one(unit, 'Service', 'Type'), 'notify');
      // The daemon sends from its main pid: NotifyAccess= stays at the default, main.
      assert.equal(unit['Service']?.['NotifyAccess'], undefined);
      assert.equal(one(unit, 'Service', 'KillMode'), 'mixed');
      assert.equal(one(unit, 'Service', 'Restart'), 'on-failure');
      assert.equal(one(unit, 'Service', 'StateDirectory'), 'cachectl');
      assert.ok(parseDuration(one(unit, 'Service', 'WatchdogSec'), 'WatchdogSec') >= 10_000);
      assert.ok(
        parseDuration(one(unit, 'Service', 'TimeoutStopSec'), 'TimeoutStopSec') > DRAIN_MS,
        'TimeoutStopSec must exceed the drain',
      );
      const [credential, source] = one(unit, 'Service', 'LoadCredential').split(':');
      assert.ok(
        one(unit, 'Service', 'ExecStart').includes(`--secret-key-file %d/${credential}`),
        'the key comes from the credential',
      );
      assert.equal(source, '/etc/cachectl/signing-key');
      for (const name of UNITS) {
        assert.doesNotMatch(
          readFileSync(join(REPO, 'systemd', name), 'utf8'),
          /^MemoryDenyWriteExecute=(yes|true|1|on)/m,
          `${name}: Node's JIT needs W+X pages`,
        );
      }
      const timer = readUnit('cachectl-gc.timer');
      assert.equal(one(timer, 'Timer', 'OnCalendar'), 'daily');
      assert.ok(parseDuration(one(timer, 'Timer', 'RandomizedDelaySec'), 'RandomizedDelaySec') > 0);
      assert.match(
        one(readUnit('cachectl-gc.service'), 'Service', 'ExecStart'),
        new RegExp(`^${INSTALLED_CACHECTL} gc --config /etc/cachectl/config.json `),
      );
    },
  );

  describe(withNix('with Nix'), () => {
    let key: Key;
    before(async () => {
      requireNix();
      key = await newKey('cachectl-unit-test-1');
    });

    it(
      'the daemon started as the unit starts it: READY, STATUS, WATCHDOG pings, a hook-queued path uploaded, a ' +
        'clean stop',
      async () => {
        const etc = tempDir('etc');
        const state = tempDir('state');
        const gcRoots = newGcRootsDir();
        const cacheDir = tempDir('unit-cache');
        const standIn = standInCachectl();
        // The unit's paths, here.
        const local = (text: string): string =>
          text
            .replaceAll(INSTALLED_CACHECTL, standIn)
            .replaceAll('/etc/cachectl', etc)
            .replaceAll('/var/lib/cachectl', state)
            .replaceAll('/nix/var/nix/gcroots/cachectl', gcRoots);
        writeFileSync(join(etc, 'config.json'), JSON.stringify({ to: `file://${cacheDir}`, jobs: 4 }));
        copyFileSync(key.secretFile, join(etc, 'signing-key'));
        const receiver = notifyReceiver();
        try {
          const service = await startService(unitService(readUnit('cachectl.service')), local, receiver.socket);
          const { tiny } = await buildFixtures(['tiny'], { nonce: `unit-${Date.now()}` });
          await checkDaemonService(
            service,
            receiver,
            { program: HOOK, args: [], env: service.env },
            tiny,
            cacheDir,
            key,
          );
          assert.ok(readdirSync(state).includes('queue.db'), 'the queue is in the StateDirectory');
        } finally {
          receiver.close();
        }
      },
    );

    it(
      'GET /metrics answers in Prometheus text format with the numbers of cachectl status --json; ' +
        '/healthz says idle',
      async () => {
        const env = queueEnv();
        const cacheDir = tempDir('metrics-cache');
        const to = `file://${cacheDir}`;
        const paths = await buildFixtures(['tiny', 'lib'], { nonce: `metrics-${Date.now()}` });
        const daemon = startDaemon(
          ['--to', to, '--secret-key-file', key.secretFile, '--metrics-listen', '127.0.0.1:0'],
          env,
        );
        try {
          const serving = await daemon.waitForLog('serving metrics');
          const base = String(serving['metrics']).replace(/\/metrics$/, '');
          assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
          await daemon.waitForLog('ready');
          assert.equal((await cachectl(['enqueue', paths.tiny, paths.lib], env)).code, 0);
          // A path the local store does not have (the hook does not look) fails at once: PATH_NOT_VALID.
          const gone = '/nix/store/00000000000000000000000000000000-cachectl-metrics-gone';
          const hook = await run(HOOK, [], { ...env, OUT_PATHS: gone });
          assert.deepEqual({ code: hook.code, stderr: hook.stderr }, { code: 0, stderr: '' });
          const gc = await cachectl(['gc', '--to', to, '--older-than', '0s', '--grace', '0s', '--dry-run'], env);
          assert.equal(gc.code, 0, gc.stderr);

          // The daemon's counters reach status through its heartbeat (every 2 s): wait until both agree.
          const { metrics, families, report } = await waitFor('metrics and status to settle', async () => {
            const report = await queueStatus(env);
            const response = await fetch(`${base}/metrics`);
            assert.equal(response.status, 200);
            assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
            const { samples: metrics, families } = parseExposition(await response.text());
            const settled =
              report.counts.done === 2 &&
              report.counts.failed === 1 &&
              report.daemon.status?.uploadedPaths === metrics.get('cachectl_uploaded_paths_total');
            return settled ? { metrics, families, report } : undefined;
          });
          for (const state of ['inbox', 'pending', 'uploading', 'done', 'failed'] as const) {
            assert.equal(metrics.get(`cachectl_queue_paths{state="${state}"}`), report.counts[state], state);
          }
          assert.equal(metrics.get('cachectl_spool_files'), report.counts.spoolFiles);
          assert.equal(metrics.get('cachectl_oldest_pending_seconds'), report.oldestPendingSeconds ?? 0);
          const daemonStatus = report.daemon.status;
          assert.equal(metrics.get('cachectl_uploaded_paths_total'), daemonStatus?.uploadedPaths);
          assert.ok((metrics.get('cachectl_uploaded_paths_total') ?? 0) >= 2);
          assert.equal(metrics.get('cachectl_uploaded_nar_bytes_total'), daemonStatus?.uploadedNarBytes);
          assert.equal(metrics.get('cachectl_uploaded_file_bytes_total'), daemonStatus?.uploadedFileBytes);
          assert.equal(metrics.get('cachectl_upload_failures_total{code="PATH_NOT_VALID"}'), 1);
          assert.equal(daemonStatus?.failedAttempts, 1);
          assert.equal(metrics.get('cachectl_upload_retries_total'), daemonStatus?.retries);
          assert.equal(metrics.get('cachectl_daemon_state{state="idle"}'), 1);
          // No pause yet: the family is there, with no sample.
          assert.equal(families.get('cachectl_daemon_pauses_total'), 'counter');
          assert.ok(![...metrics.keys()].some((name) => name.startsWith('cachectl_daemon_pauses_total')));
          // prom-client's own: the process and Node.
          assert.ok((metrics.get('process_resident_memory_bytes') ?? 0) > 10 * 1024 * 1024);
          assert.ok((metrics.get('process_cpu_seconds_total') ?? 0) > 0);
          assert.ok((metrics.get('nodejs_eventloop_lag_p99_seconds') ?? -1) >= 0);
          assert.equal(families.get('nodejs_gc_duration_seconds'), 'histogram');
          assert.ok((metrics.get('nodejs_heap_size_used_bytes') ?? 0) > 0);
          assert.ok((metrics.get('cachectl_upload_duration_seconds_count') ?? 0) >= 1);
          assert.equal(
            metrics.get('cachectl_upload_duration_seconds_bucket{le="+Inf"}'),
            metrics.get('cachectl_upload_duration_seconds_count'),
          );
          // The GC run recorded itself in the queue.
          const lastGc = report.lastGc;
          assert.ok(lastGc !== null && lastGc.ok && lastGc.dryRun);
          assert.equal(metrics.get('cachectl_gc_last_run_timestamp_seconds'), lastGc.finishedAt / 1000);
          assert.equal(metrics.get('cachectl_gc_last_run_success'), 1);
          assert.equal(metrics.get('cachectl_gc_last_run_deleted_objects'), lastGc.deletedObjects);
          assert.equal(metrics.get('cachectl_gc_last_run_deleted_bytes'), lastGc.deletedBytes);
          assert.match(
            (await cachectl(['status'], env)).stdout,
            /^last gc: \d+ s ago on file:\/\/\S+: would delete \d+ objects \([\d.]+ [KMG]?i?B\), took [\d.]+ s$/m,
          );

          const health = await fetch(`${base}/healthz`);
          assert.deepEqual({ status: health.status, text: await health.text() }, { status: 200, text: 'idle\n' });
          assert.equal((await fetch(`${base}/nothing`)).status, 404);
        } finally {
          daemon.child.kill('SIGTERM');
          assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.stderr());
        }
      },
    );

    it(
      'a metrics address it cannot use, or a malformed one, stops the daemon before it starts, naming ' + 'the option',
      async () => {
        const env = queueEnv();
        const malformed = await cachectl(
          ['daemon', '--to', `file://${tempDir('c')}`, '--metrics-listen', 'localhost:http'],
          env,
        );
        assert.equal(malformed.code, 1);
        assert.match(
          malformed.stderr,
          regex(
            /^cachectl: metrics-listen "localhost:http" must be PORT, HOST:PORT or \[IPV6\]:PORT, such as /,
            /127\.0\.0\.1:9108\n$/,
          ),
        );
        const first = startDaemon(['--to', `file://${tempDir('c')}`, '--metrics-listen', '127.0.0.1:0'], env);
        try {
          const port = String((await first.waitForLog('serving metrics'))['metrics']).match(/:(\d+)\/metrics$/)?.[1];
          const taken = await cachectl(
            [
              'daemon',
              '--to',
              `file://${tempDir('c')}`,
              '--queue',
              join(tempDir('q'), 'queue.db'),
              '--metrics-listen',
              `127.0.0.1:${port}`,
            ],
            env,
          );
          assert.equal(taken.code, 1);
          assert.match(
            taken.stderr,
            regex(
              /^cachectl: cannot serve metrics on 127\.0\.0\.1:\d+: .*EADDRINUSE.*; pick another /,
              /--metrics-listen address\n$/,
            ),
          );
        } finally {
          first.child.kill('SIGTERM');
          await first.exited;
        }
      },
    );
  });
});

/** Stands for the module's `package` in the evaluation; the tests map it to this checkout. */
const PACKAGE = '/cachectl-package';

interface ServiceConfig {
  environment?: Record<string, string>;
  serviceConfig: Record<string, string | string[]>;
}

interface ModuleEval {
  options: string[];
  config: {
    assertions: { assertion: boolean; message: string }[];
    nix: { settings: { 'post-build-hook': string } };
    systemd: {
      services: Record<string, ServiceConfig | null>;
      timers: Record<string, { timerConfig: Record<string, string | boolean> } | null>;
    };
  };
}

/** nixos-module.nix evaluated with `settings` for services.cachectl (test/nix/eval-module.nix). */
async function evalModule(settings: Record<string, unknown>): Promise<ModuleEval> {
  const result = await run('nix-instantiate', [
    '--eval',
    '--strict',
    '--json',
    '--read-write-mode',
    join(REPO, 'test/nix/eval-module.nix'),
    '--argstr',
    'settingsJson',
    JSON.stringify(settings),
    '--argstr',
    'packages',
    '/usr',
  ]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as ModuleEval;
}

function moduleService(
  evaluated: ModuleEval,
  name: string,
): ServiceSpec & { serviceConfig: Record<string, string | string[]> } {
  const service = evaluated.config.systemd.services[name];
  assert.ok(service !== null && service !== undefined, `the module defines no ${name} service`);
  const list = (value: string | string[] | undefined): string[] =>
    value === undefined ? [] : ([] as string[]).concat(value);
  return {
    execStartPre: list(service.serviceConfig['ExecStartPre']),
    execStart: String(service.serviceConfig['ExecStart']),
    environment: service.environment ?? {},
    loadCredential: list(service.serviceConfig['LoadCredential']),
    serviceConfig: service.serviceConfig,
  };
}

/** The value of `--config FILE` in a command line. */
function configFileOf(command: string): string {
  const file = /--config (\S+)/.exec(command)?.[1];
  assert.ok(file !== undefined, `no --config in ${command}`);
  return file;
}

/** Settings of the module that are not cachectl config keys, and what each becomes. */
const MODULE_ONLY: Record<string, string> = {
  enable: 'the services',
  package: 'the program the services run',
  secretKeyFiles: '--secret-key-file, through LoadCredential',
  credentialsFile: 'EnvironmentFile',
  'gc.enable': 'the GC service and timer',
  'gc.olderThan': 'olderThan in the config file',
  'gc.grace': 'grace in the config file',
  'gc.schedule': 'OnCalendar',
  'gc.randomizedDelaySec': 'RandomizedDelaySec',
  pins: 'cachectl pin',
};
/** Lines of a unit that name programs, files and paths, which the module gives its own way. */
const EXEC_KEYS = new Set(['ExecStart', 'ExecStartPre', 'LoadCredential', 'EnvironmentFile', 'Environment']);

describe('operations: nixos-module.nix and default.nix', () => {
  let key: Key;
  before(async () => {
    requireNix();
    key = await newKey('cachectl-module-test-1');
  });

  it('parse with nix-instantiate --parse', async () => {
    for (const file of ['nixos-module.nix', 'default.nix']) {
      const parsed = await run('nix-instantiate', ['--parse', join(REPO, file)]);
      assert.equal(parsed.code, 0, `${file}: ${parsed.stderr}`);
    }
  });

  it('its options, the CLI flags and the config keys agree; its units match systemd/', async () => {
    const settings = {
      enable: true,
      package: PACKAGE,
      to: 's3://cache?region=auto&endpoint=http://127.0.0.1:9000',
      secretKeyFiles: ['/etc/nix/a.sec', '/etc/nix/b.sec'],
      credentialsFile: '/etc/cachectl/aws.env',
      jobs: 3,
      compression: 'xz',
      narListing: false,
      skipSignedBy: ['cache.nixos.org-1'],
      signerCommand: '/run/wrappers/bin/hsm-signer',
      trustedPublicKeys: [`hsm-1:${Buffer.alloc(32, 3).toString('base64')}`],
      cacheControl: ['narinfo=public, max-age=60'],
      contentType: ['log=text/plain'],
      metricsListen: '127.0.0.1:9108',
      gc: { enable: true, olderThan: '100h', grace: '2h', schedule: 'weekly', randomizedDelaySec: '30min' },
      pins: { system: ['/nix/store/00000000000000000000000000000000-system'] },
    };
    const evaluated = await evalModule(settings);
    const daemon = moduleService(evaluated, 'cachectl');
    const gc = moduleService(evaluated, 'cachectl-gc');

    // Every option is a config key the module writes into the daemon's config file, or is listed above.
    const configFile = configFileOf(daemon.execStart);
    const written = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    for (const option of evaluated.options) {
      if (option in MODULE_ONLY) continue;
      assert.ok(
        option in CONFIG_KEYS,
        `services.cachectl.${option} is neither a config key (${Object.keys(CONFIG_KEYS).join(', ')}) nor known to ` +
          `this test`,
      );
      assert.deepEqual(written[option], (settings as Record<string, unknown>)[option], option);
    }
    assert.deepEqual(
      Object.keys(MODULE_ONLY).filter((option) => !evaluated.options.includes(option)),
      [],
      'options this test expects',
    );
    assert.deepEqual([written['olderThan'], written['grace']], [settings.gc.olderThan, settings.gc.grace]);
    // Every config key is set by the module (queue and gcRoots, its own), but the keys given as flags and the GC's
    // metadata cache (its service's XDG_CACHE_HOME).
    assert.deepEqual(
      [...Object.keys(written), 'secretKeyFiles', 'metadataCache'].sort(),
      Object.keys(CONFIG_KEYS).sort(),
    );
    // cachectl itself accepts the file.
    const resolved = resolveConfig({}, {}, { name: configFile, text: readFileSync(configFile, 'utf8') });
    assert.deepEqual(resolved.skipSignedBy, settings.skipSignedBy);
    assert.equal(resolved.objectHeaders.narinfo.cacheControl, 'public, max-age=60');
    assert.equal(resolved.objectHeaders.log.contentType, 'text/plain');

    // Every flag on the services' command lines is one the command knows.
    const commands = [daemon.execStart, ...gc.execStartPre, gc.execStart];
    for (const command of commands) {
      const [program, subcommand, ...args] = execWords(command);
      assert.equal(program, `${PACKAGE}/bin/cachectl`);
      const help = await cachectl([String(subcommand), '--help']);
      for (const flag of args.filter((arg) => arg.startsWith('--')))
        assert.ok(help.stdout.includes(`${flag} `), `cachectl ${subcommand} has no ${flag}`);
    }
    assert.equal(daemon.execStart.split('--secret-key-file %d/').length - 1, settings.secretKeyFiles.length);
    assert.deepEqual(
      daemon.loadCredential.map((entry) => entry.split(':')[1]),
      settings.secretKeyFiles,
    );
    const gcConfig = resolveConfig({}, {}, { name: configFile, text: readFileSync(configFile, 'utf8') });
    assert.deepEqual([gcConfig.olderThanMs, gcConfig.graceMs], [100 * 3600_000, 2 * 3600_000]);
    assert.deepEqual(gc.execStartPre, [
      `-${PACKAGE}/bin/cachectl pin --config ${configFile} system ${settings.pins.system[0]}`,
    ]);
    for (const service of [daemon, gc])
      assert.equal(service.serviceConfig['EnvironmentFile'], settings.credentialsFile);
    assert.deepEqual(evaluated.config.systemd.timers['cachectl-gc']?.timerConfig, {
      OnCalendar: 'weekly',
      RandomizedDelaySec: '30min',
      Persistent: true,
    });

    // The same settings as the shipped units, but for programs and paths.
    for (const [name, service] of [
      ['cachectl.service', daemon],
      ['cachectl-gc.service', gc],
    ] as const) {
      const shipped = readUnit(name)['Service'] ?? {};
      const fromModule = Object.entries(service.serviceConfig).filter(([setting]) => !EXEC_KEYS.has(setting));
      assert.deepEqual(
        Object.fromEntries(fromModule),
        Object.fromEntries(
          Object.entries(shipped)
            .filter(([setting]) => !EXEC_KEYS.has(setting))
            .map(([setting, values]) => [setting, values.join(' ')]),
        ),
        name,
      );
      assert.deepEqual(service.environment, unitService(readUnit(name)).environment, `${name}: Environment`);
    }
    const shippedTimer = readUnit('cachectl-gc.timer')['Timer'] ?? {};
    const defaults = await evalModule({ enable: true, package: PACKAGE, to: 'file:///x', gc: { enable: true } });
    const timer = defaults.config.systemd.timers['cachectl-gc']?.timerConfig;
    assert.deepEqual(timer, {
      OnCalendar: shippedTimer['OnCalendar']?.[0],
      RandomizedDelaySec: shippedTimer['RandomizedDelaySec']?.[0],
      Persistent: shippedTimer['Persistent']?.[0] === 'true',
    });
    const minimal = await evalModule({ enable: true, package: PACKAGE, to: 'file:///x' });
    assert.equal(minimal.config.systemd.services['cachectl-gc'], null, 'no GC unless asked for');
    assert.equal(minimal.config.systemd.timers['cachectl-gc'], null, 'no GC unless asked for');
    assert.equal(moduleService(minimal, 'cachectl').execStart.includes('--secret-key-file'), false);

    // A key in the store is refused.
    const inStore = await evalModule({
      enable: true,
      package: PACKAGE,
      to: 'file:///x',
      secretKeyFiles: ['/nix/store/x-key.sec', 'relative.sec'],
    });
    assert.deepEqual(
      inStore.config.assertions.map((check) => check.assertion),
      [false, false],
    );
    assert.match(
      inStore.config.assertions[0]?.message ?? '',
      /^services\.cachectl\.secretKeyFiles: \/nix\/store\/x-key\.sec must be an absolute path outside the Nix store/,
    );
  });

  it("a machine with services.cachectl, run here: Nix's hook, the daemon, the pins and the GC", async () => {
    const { tiny } = await buildFixtures(['tiny'], { nonce: `module-${Date.now()}` });
    const cacheDir = tempDir('module-cache');
    const evaluated = await evalModule({
      enable: true,
      package: PACKAGE,
      to: `file://${cacheDir}`,
      secretKeyFiles: [key.secretFile],
      jobs: 2,
      gc: { enable: true },
      pins: { demo: [tiny] },
    });
    const state = tempDir('state');
    const gcRoots = newGcRootsDir();
    const cacheHome = tempDir('cache-home');
    const standIn = standInCachectl();
    const local = (text: string): string =>
      text
        .replaceAll(`${PACKAGE}/bin/cachectl`, standIn)
        .replaceAll(`${PACKAGE}/lib/node_modules/cachectl/`, REPO)
        .replaceAll('/var/lib/cachectl', state)
        .replaceAll('/var/cache/cachectl', cacheHome)
        .replaceAll('/nix/var/nix/gcroots/cachectl', gcRoots);
    // nix.settings.post-build-hook, as Nix would run it: with Nix's environment, nothing of cachectl's.
    const hook = join(tempDir('hook'), 'post-build-hook');
    writeFileSync(hook, local(readFileSync(evaluated.config.nix.settings['post-build-hook'], 'utf8')));
    const receiver = notifyReceiver();
    try {
      const service = await startService(moduleService(evaluated, 'cachectl'), local, receiver.socket);
      await checkDaemonService(service, receiver, { program: 'sh', args: [hook], env: testEnv() }, tiny, cacheDir, key);
    } finally {
      receiver.close();
    }

    // The GC service: its pins first, then the GC, which records its run in the queue.
    const gc = moduleService(evaluated, 'cachectl-gc');
    const env = testEnv(
      Object.fromEntries(Object.entries(gc.environment).map(([name, value]) => [name, local(value)])),
    );
    for (const command of [...gc.execStartPre, gc.execStart]) {
      const [program, ...args] = execWords(local(command));
      const result = await run(program, args, env);
      assert.equal(result.code, 0, `${command}: ${result.stderr}`);
    }
    const pins = await cachectl(['pins', '--json', '--to', `file://${cacheDir}`], env);
    assert.deepEqual(JSON.parse(pins.stdout), [{ name: 'demo', paths: [tiny], problems: [] }]);
    const report = await queueStatus(env);
    assert.ok(report.lastGc?.ok === true && !report.lastGc.dryRun, JSON.stringify(report.lastGc));
    assert.equal(report.counts.done, 1);
  });
});
