/**
 * The shipped units under a booted systemd (PID 1 in systemd-nspawn, test/systemd/machine.sh) with Debian's
 * nix-daemon, cachectl installed as `npm install -g` lays it out, and systemd/* copied in unchanged: on this
 * machine's Debian 12 (systemd 252, Nix 2.8) and on the sid root (systemd 262, Nix 2.34; test/sid-root.sh). Each
 * scenario asserts on systemd's own view (`systemctl show`, PID 1's journal at debug level, which logs every
 * notification it accepts) and on Nix's (`nix store verify -r` with the key, substitution into a fresh store).
 * The machine's clock is not faked: the watchdog runs at 5 s (a drop-in), the drain limit is the daemon's own
 * 60 s. Needs root, as CI is.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { nixCacheUrl, parseCacheUrl } from '../src/core/cache-url.js';
import { DRAIN_MS } from '../src/daemon/daemon.js';
import { nixVersion, sidRoot } from './helpers/nix.js';
import { waitFor } from './helpers/daemon.js';
import { regex } from './helpers/regex.js';
import { Machine, type UnitState } from './helpers/machine.js';

const QUEUE = '/var/lib/cachectl/queue.db';
const GC_ROOTS = '/nix/var/nix/gcroots/cachectl';
const FILE_CACHE = '/var/lib/cachectl/cache';
const S3_PORT = 4569;
const S3_URL = `s3://nix-cache?endpoint=http://127.0.0.1:${S3_PORT}&region=us-east-1`;
/** Debian's Nix 2.8 has no s3:// store: it reads the bucket over HTTP. */
const S3_HTTP = `http://127.0.0.1:${S3_PORT}/nix-cache`;
/**
 * What Nix >= 2.34 reads it through: the URL cachectl prints for clients (the credentials in the environment go
 * unused by Debian's build, which has no AWS authentication and sends its requests unsigned).
 */
const S3_FOR_NIX = nixCacheUrl(parseCacheUrl(S3_URL));
const S3_CREDENTIALS = 'AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER';

/** The machines booted: this one's Debian 12 and the sid root, each with its own Nix. */
const sid = sidRoot();
const MACHINES = [
  { name: 'Debian 12', root: '/', nixVersion: nixVersion(), s3ForNix: S3_HTTP },
  { name: 'Debian sid', root: sid.dir, nixVersion: sid.nixVersion, s3ForNix: S3_FOR_NIX },
];
const FIXTURES = '/mnt/checkout/test/fixtures/closures.nix';
const HOOK = '/usr/local/lib/node_modules/cachectl/hook/post-build-hook';

/** PID 1's debug line for a notification from `pid` that starts with `message`: `PID 7 (READY=1…` up to systemd 252,
 * `PID 7: READY=1…` in 262. */
const notified = (pid: number, message: string) =>
  new RegExp(`Got notification message from PID ${pid}(?: \\(|: )${message}`);

interface Row {
  path: string;
  state: string;
  attempts: number;
  source: string;
  lastError: string | null;
}

for (const os of MACHINES) {
  describe(
    `systemd: the shipped units on a booted ${os.name} with nix-daemon (Nix ${os.nixVersion})`,
    { timeout: 1_800_000 },
    () => {
      let machine: Machine;
      /** where node is inside the machine (/usr/bin on Debian 12, the sid root's copy in /usr/local/bin) */
      let node = '';
      let publicKey = '';
      let nonce = 0;
      /** every path uploaded to s3rver so far, verified again after the power cut */
      const inBucket: string[] = [];

      const sh = (script: string, timeoutMs?: number) => machine.ok(script, timeoutMs);
      const unit = (name = 'cachectl.service') => machine.unit(name);
      const cursor = async () => /-- cursor: (\S+)/.exec(await sh('journalctl -q -n 1 --show-cursor'))?.[1] ?? '';
      /**
       * The messages of a unit's journal (systemd's own lines about it) since `from`, once each of `expected` is
       * there: journald files a line a little after it was sent. The daemon's own lines are asked for by its pid
       * (`_PID=`): journald does not always file a service's output under its unit.
       */
      const journal = (from: string, expected: readonly RegExp[], filter = '-u cachectl.service') => {
        let log = '';
        return waitFor(
          `${expected.join(', ')} in the journal`,
          async () => {
            log = await sh(`journalctl -q -o cat ${filter} --after-cursor='${from}'`);
            return expected.every((pattern) => pattern.test(log)) ? log : undefined;
          },
          20_000,
          () => log,
        );
      };
      const systemctl = (args: string) => sh(`systemctl ${args}`);

      /** Waits until the unit's state satisfies `ready`; gives up early once systemd had to restart it. */
      async function waitUnit(
        what: string,
        ready: (state: UnitState) => boolean,
        timeoutMs = 60_000,
        name = 'cachectl.service',
      ): Promise<UnitState> {
        const restartsBefore = (await unit(name)).NRestarts;
        return waitFor(
          what,
          async () => {
            const state = await unit(name);
            if (ready(state)) return state;
            if (state.NRestarts > restartsBefore + 1) {
              throw new Error(
                `${name} keeps restarting while waiting for ${what}: ` +
                  `${JSON.stringify(state)}\n${await sh(`journalctl -q -u ${name} -n 20`)}`,
              );
            }
            return undefined;
          },
          timeoutMs,
          () => '',
        ).catch(async (err: unknown) => {
          // what the unit said is what explains a timeout
          throw new Error(`${(err as Error).message}\n${await sh(`journalctl -q -u ${name} -n 30 --no-pager`)}`);
        });
      }
      const isReady = (state: UnitState) => state.ActiveState === 'active' && state.SubState === 'running';

      /** `systemctl start` without waiting on the job (READY may take long), then waits for READY. */
      async function start(): Promise<UnitState> {
        await systemctl('start --no-block cachectl.service');
        return waitUnit('cachectl.service READY', isReady);
      }
      async function stop(): Promise<UnitState> {
        await systemctl('stop cachectl.service');
        return unit();
      }
      async function restart(): Promise<UnitState> {
        const before = (await unit()).MainPID;
        await systemctl('restart --no-block cachectl.service');
        return waitUnit('cachectl.service READY again', (state) => isReady(state) && state.MainPID !== before);
      }
      const setCache = (to: string) =>
        sh(`echo '${JSON.stringify({ to, jobs: 4, compression: 'zstd' })}' >/etc/cachectl/config.json`);
      const dropIn = (unitName: string, name: string, text: string) =>
        sh(
          `mkdir -p /etc/systemd/system/${unitName}.d && printf '%s' '${text}' ` +
            `>/etc/systemd/system/${unitName}.d/${name}.conf && systemctl daemon-reload`,
        );
      const removeDropIn = (unitName: string, name: string) =>
        sh(`rm /etc/systemd/system/${unitName}.d/${name}.conf && systemctl daemon-reload`);
      /**
       * Where each scenario starts, whatever the one before left (so one failure does not fail the rest): the
       * shipped unit without drop-ins, the cache `to`, s3rver running, the daemon READY.
       */
      async function baseline(to = `file://${FILE_CACHE}`): Promise<UnitState> {
        await sh(
          'rm -rf /etc/systemd/system/cachectl.service.d && systemctl daemon-reload && systemctl reset-failed ' +
            'cachectl.service',
        );
        await sh(
          'kill -CONT "$(systemctl show -p MainPID --value s3rver.service)" "$(systemctl show -p MainPID --value ' +
            'cachectl.service)" 2>/dev/null || true',
        );
        await setCache(to);
        return restart();
      }

      /**
       * Builds a fixture as the unprivileged user `builder` through nix-daemon, which runs the hook as root;
       * returns the closure's paths (leaves first) and what nix-build printed on stderr.
       */
      async function build(
        attr: string,
        args: Record<string, string> = {},
      ): Promise<{ paths: string[]; out: string; stderr: string }> {
        nonce += 1;
        const argstrs = Object.entries({ nonce: `sd-${nonce}-${Date.now()}`, ...args })
          .map(([name, value]) => `--argstr ${name} ${value}`)
          .join(' ');
        const result = await machine.sh(
          `runuser -u builder -- nix-build ${FIXTURES} --no-out-link -A ${attr} ${argstrs}`,
        );
        assert.equal(result.code, 0, `nix-build as builder: ${result.stderr}`);
        const out = result.stdout.trim();
        const paths = (await sh(`nix-store -q --requisites ${out}`)).trim().split('\n');
        return { paths, out, stderr: result.stderr };
      }

      async function rows(paths: readonly string[]): Promise<Row[]> {
        const sql =
          `SELECT store_path AS path, state, attempts, source, last_error AS lastError FROM paths WHERE ` +
          `store_path IN (${paths.map((p) => `'${p}'`).join(',')})`;
        const text = await sh(`sqlite3 -readonly -json ${QUEUE} "${sql}"`);
        return text.trim() === '' ? [] : (JSON.parse(text) as Row[]);
      }

      /** Waits until every path is done; fails at once when one has failed, or its upload failed once. */
      async function uploaded(paths: readonly string[], timeoutMs = 120_000): Promise<Row[]> {
        return waitFor(
          `${paths.length} paths done`,
          async () => {
            const now = await rows(paths);
            const failing = now.find((row) => row.state === 'failed' || row.lastError !== null);
            if (failing !== undefined) throw new Error(`${failing.path}: ${failing.state}, ${failing.lastError}`);
            return now.length === paths.length && now.every((row) => row.state === 'done') ? now : undefined;
          },
          timeoutMs,
          () => '',
        );
      }

      const verify = (store: string, paths: readonly string[]) =>
        sh(
          `${S3_CREDENTIALS} nix store verify --store '${store}' --trusted-public-keys '${publicKey}' -r ` +
            paths.join(' '),
        );
      const substitute = (store: string, path: string) =>
        sh(
          `rm -rf /tmp/fresh-store && ${S3_CREDENTIALS} nix copy --from '${store}' --to /tmp/fresh-store --option ` +
            `trusted-public-keys '${publicKey}' ${path} && ` +
            `nix store verify --store /tmp/fresh-store --trusted-public-keys '${publicKey}' -r ${path}`,
        );

      /**
       * A 200 MiB path built with s3rver frozen, once the daemon has claimed it: an upload held in flight, at a known
       * step, whatever the timing.
       */
      async function uploadHeld(): Promise<{ paths: string[]; out: string }> {
        await freeze('s3rver.service');
        const big = await build('big', { bigMb: '200' });
        await waitFor(`${big.out} claimed`, async () =>
          (await rows([big.out]))[0]?.state === 'uploading' ? true : undefined,
        );
        return big;
      }

      /** Processes other than `except` with Nix's database open (a nix-daemon worker lives as long as its client). */
      const nixDbHolders = async (except = 0) =>
        (
          await sh(
            `for fd in /proc/[0-9]*/fd/*; do [ "$(readlink "$fd")" != /nix/var/nix/db/db.sqlite ] || echo ` +
              `"\${fd#/proc/}"; done 2>/dev/null | cut -d/ -f1 | sort -u`,
          )
        )
          .split('\n')
          .filter((pid) => pid !== '' && Number(pid) !== except);

      /** SIGSTOP / SIGCONT to a unit's main process (`systemctl freeze` needs cgroup v2; these machines have v1). */
      const signalMain = async (name: string, signal: 'STOP' | 'CONT') => {
        const { MainPID } = await unit(name);
        assert.ok(MainPID > 0, `${name} has no main process to SIG${signal}`);
        await sh(`kill -${signal} ${MainPID}`);
      };
      const freeze = (name: string) => signalMain(name, 'STOP');
      const thaw = (name: string) => signalMain(name, 'CONT');

      /**
       * PID 1 at debug level logs every notification it takes ("Got notification message from PID …") and every one
       * it cannot place ("Cannot find unit for notify message"); journald, left to its rate limit, would drop some.
       */
      const debugJournal = () =>
        sh(`mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\\nRateLimitBurst=0\\n' >/etc/systemd/journald.conf.d/no-limit.conf
systemctl restart systemd-journald.service
systemd-analyze log-level debug`);

      before(async () => {
        assert.equal(
          process.getuid?.(),
          0,
          'the systemd suite needs root (overlay mounts, systemd-nspawn); CI runs as root',
        );
        machine = await Machine.prepare(os.root);
        await machine.boot();
        assert.equal((await sh('nix-store --version')).trim(), `nix-store (Nix) ${os.nixVersion}`);
        node = (await sh('readlink -f "$(command -v node)"')).trim();
        await debugJournal();
        await sh(`cat >/etc/nix/nix.conf <<'EOF'
sandbox = false
post-build-hook = ${HOOK}
substituters =
experimental-features = nix-command
narinfo-cache-negative-ttl = 0
narinfo-cache-positive-ttl = 0
builders =
EOF
systemctl stop nix-daemon.service # socket-activated: the next client starts it with this nix.conf
useradd --create-home --groups nix-users builder
cat >/etc/systemd/system/s3rver.service <<'EOF'
[Unit]
Description=s3rver on 127.0.0.1:${S3_PORT}, bucket nix-cache (PUTs atomic, as on S3)
[Service]
ExecStart=${node} --openssl-legacy-provider /mnt/checkout/test/helpers/s3rver-atomic.cjs -d /var/lib/s3rver \\
  -a 127.0.0.1 -p ${S3_PORT} --silent --no-vhost-buckets --configure-bucket nix-cache
StateDirectory=s3rver
[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable --now s3rver.service
install -d -m 700 /etc/cachectl
printf 'AWS_ACCESS_KEY_ID=S3RVER\\nAWS_SECRET_ACCESS_KEY=S3RVER\\n' >/etc/cachectl/aws.env
chmod 600 /etc/cachectl/aws.env
cp /usr/local/lib/node_modules/cachectl/systemd/* /etc/systemd/system/
systemctl daemon-reload`);
        publicKey = (await sh('cachectl keygen cachectl-test-1 --secret-key-file /etc/cachectl/signing-key')).trim();
        await setCache(`file://${FILE_CACHE}`);
        await waitFor('s3rver.service to answer', async () =>
          (await machine.sh(`curl -sf -o /dev/null ${S3_HTTP}`)).code === 0 ? true : undefined,
        );
      });

      after(async () => {
        await machine?.close();
      });

      it(
        'a fresh machine: `systemctl enable --now cachectl` reaches READY; the GC service runs ' + 'from its timer',
        async () => {
          // Nothing was built yet: neither the GC roots directory nor Nix's database exists.
          await sh(`test ! -e ${GC_ROOTS} && test ! -e /nix/var/nix/db`);
          const from = await cursor();
          await systemctl('enable --now --no-block cachectl.service cachectl-gc.timer');
          const ready = await waitUnit('cachectl.service READY on a fresh machine', isReady);
          assert.deepEqual(
            { ...ready, MainPID: 0, StatusText: '' },
            {
              ActiveState: 'active',
              SubState: 'running',
              Result: 'success',
              NRestarts: 0,
              StatusText: '',
              MainPID: 0,
              ExecMainCode: '0',
              ExecMainStatus: '0',
            },
          );
          assert.match(ready.StatusText, /^idle: 0 pending, 0 uploading, 0 done, 0 failed; 0\.0 paths\/s$/);
          assert.equal((await sh(`readlink /proc/${ready.MainPID}/exe`)).trim(), node, 'MainPID is the daemon itself');
          // READY=1 from the main process
          const log = await journal(from, [notified(ready.MainPID, 'READY=1')]);
          assert.doesNotMatch(log, /Main process exited|Failed with result|Failed to set up/, log);

          const timer = await unit('cachectl-gc.timer');
          assert.deepEqual([timer.ActiveState, timer.SubState], ['active', 'waiting']);
          const next = (await sh('systemctl show -p NextElapseUSecRealtime --value cachectl-gc.timer')).trim();
          const nextMs = Date.parse(next.replace(/^\w+ /, '').replace(/ UTC$/, 'Z').replace(' ', 'T'));
          assert.ok(
            nextMs > Date.now() && nextMs < Date.now() + 25 * 3600_000,
            `next GC within a day and an hour: ${next}`,
          );
          // The timer's own trigger, brought forward: it elapses 1 s after it starts.
          await dropIn('cachectl-gc.timer', 'now', '[Timer]\nOnCalendar=\nOnActiveSec=1s\nRandomizedDelaySec=0\n');
          await systemctl('restart cachectl-gc.timer');
          const ran = await waitFor('cachectl-gc.service started by its timer, and finished', async () => {
            const exited = (
              await sh('systemctl show -p ExecMainExitTimestampMonotonic --value cachectl-gc.service')
            ).trim();
            const state = await unit('cachectl-gc.service');
            return exited !== '0' && state.ActiveState === 'inactive' ? state : undefined;
          });
          assert.deepEqual(
            [ran.Result, ran.ExecMainCode, ran.ExecMainStatus],
            ['success', '1', '0'],
            JSON.stringify(ran),
          );
          assert.notEqual((await sh('systemctl show -p LastTriggerUSec --value cachectl-gc.timer')).trim(), 'n/a');
          const status = JSON.parse(await sh('cachectl status --json')) as { lastGc?: { ok: boolean; cache: string } };
          assert.equal(status.lastGc?.ok, true, JSON.stringify(status));
          assert.equal(status.lastGc?.cache, `file://${FILE_CACHE}`);
          await removeDropIn('cachectl-gc.timer', 'now');
          await systemctl('restart cachectl-gc.timer');
        },
      );

      it('a stop right after the start: STOPPING=1 reaches systemd, exit 0, nothing killed', async () => {
        const from = await cursor();
        const ready = await baseline();
        await systemctl('stop cachectl.service');
        const stopped = await unit();
        assert.deepEqual(
          [stopped.ActiveState, stopped.Result, stopped.ExecMainStatus],
          ['inactive', 'success', '0'],
          JSON.stringify(stopped),
        );
        const log = await journal(from, [notified(ready.MainPID, 'STOPPING=1'), /Deactivated successfully/]);
        assert.doesNotMatch(log, /Killing process/, log);
      });

      it(
        'users in nix-users build through nix-daemon; the hook, run by nix-daemon as root, queues; every path ' +
          'reaches file:// and s3rver',
        async () => {
          await baseline();
          const { paths, out, stderr } = await build('chain', { chainLength: '5' });
          assert.equal(paths.length, 6);
          assert.doesNotMatch(
            stderr,
            /cachectl post-build-hook/,
            'the hook printed nothing: no spool, no GC-root trouble',
          );
          assert.equal(
            (await sh(`stat -c '%a %U' ${GC_ROOTS}`)).trim(),
            '700 root',
            'the hook made the GC roots directory',
          );
          const done = await uploaded(paths);
          assert.deepEqual(
            done.map((row) => [row.source, row.attempts]),
            paths.map(() => ['hook', 1]),
          );
          await verify(`file://${FILE_CACHE}`, paths);
          await substitute(`file://${FILE_CACHE}`, out);
          await waitFor('the GC roots of uploaded paths to go', async () =>
            (await sh(`ls -A ${GC_ROOTS}`)).trim() === '' ? true : undefined,
          );

          await baseline(S3_URL);
          const s3 = await build('chain', { chainLength: '5' });
          await uploaded(s3.paths);
          await verify(os.s3ForNix, s3.paths);
          await substitute(os.s3ForNix, s3.out);
          inBucket.push(...s3.paths);
        },
      );

      it(
        'a file:// cache outside /var/lib/cachectl: refused before READY naming the fix; the README drop-in ' +
          'makes it work',
        async () => {
          await baseline();
          const from = await cursor();
          await setCache('file:///srv/nix-cache');
          await systemctl('restart --no-block cachectl.service');
          // Between the failure and the restart RestartSec later: what `systemctl status` shows then.
          const failed = await waitFor('cachectl.service to fail, to be restarted', async () => {
            const state = await unit();
            return state.SubState === 'auto-restart' ? state : undefined;
          });
          assert.deepEqual([failed.Result, failed.ExecMainStatus], ['exit-code', '1']);
          const why = regex(
            /^cache file:\/\/\/srv\/nix-cache is not writable here \(.*\); under systemd\/cachectl\.service, a /,
            /file:\/\/ cache outside \/var\/lib\/cachectl must exist and be named in a drop-in: /,
            /ReadWritePaths=\/srv\/nix-cache /,
          );
          assert.match(failed.StatusText.replace(/^failed: /, ''), why, JSON.stringify(failed));
          // In the journal too, under the daemon's name (journald may not know the unit of a process that exited at
          // once).
          const said = await journal(from, [/^cachectl: /m], '-t cachectl');
          assert.match(
            said
              .split('\n')
              .find((line) => line.startsWith('cachectl: '))
              ?.slice('cachectl: '.length) ?? '',
            why,
            said,
          );
          // As the README says: the directory made, then named writable.
          await sh('install -d -m 755 /srv/nix-cache');
          await dropIn('cachectl.service', 'cache-dir', '[Service]\nReadWritePaths=/srv/nix-cache\n');
          await systemctl('reset-failed cachectl.service');
          await restart();
          const { paths } = await build('tiny');
          await uploaded(paths);
          await verify('file:///srv/nix-cache', paths);
        },
      );

      it(
        'paths built while the daemon is stopped, with no Nix process holding the database: all upload after the ' +
          'start, none fails',
        async () => {
          await baseline();
          await stop();
          const { paths } = await build('chain', { chainLength: '3' });
          // Once no Nix process has the database open, SQLite has removed db.sqlite-wal and -shm: the daemon, opening
          // it now, must create them.
          await waitFor('no Nix process holding the database', async () =>
            (await nixDbHolders()).length === 0 ? true : undefined,
          );
          // (Nix 2.8 removes them; 2.34 leaves them, and the daemon opens the database as it finds it)
          if (os.nixVersion.startsWith('2.8.'))
            await sh('test ! -e /nix/var/nix/db/db.sqlite-wal && test ! -e /nix/var/nix/db/db.sqlite-shm');
          const from = await cursor();
          const started = await start();
          const done = await uploaded(paths);
          assert.deepEqual(
            done.map((row) => row.attempts),
            paths.map(() => 1),
            'no try used up',
          );
          const log = await journal(from, [/"msg":"uploaded"/], `_PID=${started.MainPID}`);
          assert.doesNotMatch(log, /upload failed|unable to open|NIX_STORE_UNREADABLE/, log);
          await verify(`file://${FILE_CACHE}`, paths);
        },
      );

      it('paths built while the daemon is frozen: all upload once it runs again, by the same process', async () => {
        const before = await baseline();
        await freeze('cachectl.service');
        const { paths } = await build('chain', { chainLength: '3' });
        assert.equal((await sh(`ls ${GC_ROOTS} | wc -l`)).trim(), String(paths.length), 'the hook made the GC roots');
        await waitFor('no Nix process holding the database', async () =>
          (await nixDbHolders(before.MainPID)).length === 0 ? true : undefined,
        );
        await thaw('cachectl.service');
        const done = await uploaded(paths);
        assert.deepEqual(
          done.map((row) => row.attempts),
          paths.map(() => 1),
        );
        const after = await unit();
        assert.deepEqual([after.MainPID, after.NRestarts], [before.MainPID, before.NRestarts]);
        await verify(`file://${FILE_CACHE}`, paths);
      });

      it('the watchdog kills a frozen daemon and systemd restarts it; nothing is lost', async () => {
        await baseline();
        await dropIn('cachectl.service', 'watchdog', '[Service]\nWatchdogSec=5s\n');
        const ready = await restart();
        assert.equal((await sh('systemctl show -p WatchdogUSec --value cachectl.service')).trim(), '5s');
        // Healthy: systemd takes a ping twice, from the same process (pings go out every 2.5 s).
        const pinged = () => sh('systemctl show -p WatchdogTimestampMonotonic --value cachectl.service').then(Number);
        const first = await pinged();
        const second = await waitFor(
          'a watchdog ping',
          async () => ((await pinged()) > first ? pinged() : undefined),
          20_000,
        );
        await waitFor('another watchdog ping', async () => ((await pinged()) > second ? true : undefined), 20_000);
        assert.deepEqual([(await unit()).MainPID, (await unit()).NRestarts], [ready.MainPID, ready.NRestarts]);

        await freeze('cachectl.service');
        const { paths } = await build('chain', { chainLength: '2' });
        const restarted = await waitUnit(
          'a new daemon after the watchdog',
          (state) => isReady(state) && state.MainPID !== ready.MainPID,
          60_000,
        );
        assert.equal(restarted.NRestarts, ready.NRestarts + 1);
        // The only 5 s watchdog of this boot, and the frozen process by its pid.
        await waitFor(
          'the watchdog in the journal',
          async () => {
            const log = await sh('journalctl -q -o cat -b -u cachectl.service');
            return /Watchdog timeout \(limit 5s\)!/.test(log) &&
              log.includes(`Killing process ${ready.MainPID} (node) with signal SIGABRT`) &&
              /Failed with result 'watchdog'/.test(log)
              ? true
              : undefined;
          },
          20_000,
        );
        await uploaded(paths);
        await verify(`file://${FILE_CACHE}`, paths);
      });

      it(
        '`systemctl stop` mid-upload of a large NAR: STOPPING, the upload drains, exit 0; a longer drain hands the ' +
          'path back',
        async () => {
          await baseline(S3_URL);
          const big = await uploadHeld();
          const uploading = await unit();
          let from = await cursor();
          await systemctl('stop --no-block cachectl.service');
          const draining = await waitUnit('draining', (state) => state.ActiveState === 'deactivating');
          assert.equal(draining.SubState, 'stop-sigterm');
          assert.match(draining.StatusText, /^draining: 0 pending, 1 uploading/);
          await thaw('s3rver.service');
          const stopped = await waitUnit('stopped', (state) => state.ActiveState === 'inactive', 120_000);
          assert.deepEqual([stopped.Result, stopped.ExecMainStatus], ['success', '0'], JSON.stringify(stopped));
          let log = await journal(from, [notified(uploading.MainPID, 'STOPPING=1'), /Deactivated successfully/]);
          log += await journal(from, [/"msg":"draining"/, /"msg":"stopped"/], `_PID=${uploading.MainPID}`);
          assert.doesNotMatch(log, /drain time is up|Killing/, log);
          assert.equal((await rows([big.out]))[0]?.state, 'done', 'the drain finished the upload');
          await start();
          await uploaded(big.paths);
          await verify(os.s3ForNix, big.paths);
          inBucket.push(...big.paths);

          // The server stays frozen: the drain limit passes, the path goes back to the queue, still before
          // systemd's TimeoutStopSec.
          const stuck = await uploadHeld();
          from = await cursor();
          const stuckDaemon = await unit();
          const stopStarted = Date.now();
          await systemctl('stop --no-block cachectl.service');
          const handedBack = await waitUnit(
            'stopped after the drain limit',
            (state) => state.ActiveState === 'inactive',
            DRAIN_MS + 60_000,
          );
          assert.ok(Date.now() - stopStarted >= DRAIN_MS, 'it waited out the drain limit');
          assert.deepEqual(
            [handedBack.Result, handedBack.ExecMainStatus],
            ['success', '0'],
            JSON.stringify(handedBack),
          );
          log = await journal(from, [/Deactivated successfully/]);
          log += await journal(
            from,
            [/drain time is up: uploads in flight go back to the queue/],
            `_PID=${stuckDaemon.MainPID}`,
          );
          assert.doesNotMatch(log, /timed out\. Killing|Killing process/, log);
          const [row] = await rows([stuck.out]);
          assert.deepEqual([row?.state, row?.attempts], ['pending', 0], 'handed back, its try not counted');
          await thaw('s3rver.service');
          await start();
          const done = await uploaded(stuck.paths);
          assert.equal(done.find((r) => r.path === stuck.out)?.attempts, 1);
          await verify(os.s3ForNix, stuck.paths);
          inBucket.push(...stuck.paths);
        },
      );

      it(
        'a power cut mid-upload; at the next boot the daemon takes the path back and uploads it; the bucket is ' +
          'consistent',
        async () => {
          await baseline(S3_URL);
          const big = await uploadHeld();
          await machine.powerCut();

          await machine.boot();
          await debugJournal();
          const ready = await waitUnit('cachectl.service READY at boot', isReady);
          assert.equal(ready.NRestarts, 0);
          const done = await uploaded(big.paths);
          assert.equal(
            done.find((row) => row.path === big.out)?.attempts,
            2,
            'the claim cut off by the power counts one try',
          );
          await waitFor('the take-back in the journal', async () =>
            /"paths":1,"msg":"took back paths a stopped daemon was uploading"/.test(
              await sh(`journalctl -q -o cat -b _PID=${ready.MainPID}`),
            )
              ? true
              : undefined,
          );
          inBucket.push(...big.paths);
          await verify(os.s3ForNix, inBucket);
          assert.equal(
            (await sh(`sqlite3 -readonly ${QUEUE} "SELECT count(*) FROM paths WHERE state = 'failed'"`)).trim(),
            '0',
          );
        },
      );

      it('systemd placed every notification: none came from a process it could not find', async () => {
        for (const boot of ['-1', '0']) {
          const log = await sh(`journalctl -q -o cat -b ${boot} _PID=1`);
          assert.doesNotMatch(log, /Cannot find unit for notify message/, `boot ${boot}`);
          assert.match(log, /cachectl\.service: Got notification message/, `boot ${boot}`);
          assert.doesNotMatch(
            await sh(`journalctl -q -o cat -b ${boot}`),
            /Suppressed \d+ messages/,
            'journald dropped nothing',
          );
        }
      });
    },
  );
}
