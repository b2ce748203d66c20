import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Counters } from '../../src/daemon/counters.js';
import { Heartbeat } from '../../src/daemon/heartbeat.js';
import { Intake } from '../../src/daemon/intake.js';
import { uploadDurationHistogram } from '../../src/daemon/metrics.js';
import type { DaemonStatus } from '../../src/queue/daemon-record.js';
import { Queue } from '../../src/queue/queue.js';
import { spoolDirOf } from '../../src/queue/spool.js';
import { tempDir } from '../helpers/nix.js';

const log = pino({ level: 'silent' });
const path = (n: number, name: string) => `/nix/store/${String(n).repeat(32).slice(0, 32)}-${name}`;

function newQueue(clock: { now: number }) {
  const file = join(tempDir('daemon-parts'), 'queue.db');
  return Queue.open(file, { now: () => clock.now });
}

describe('intake', () => {
  it('takes the inbox and the spool in: built paths, derivations by their outputs, the rest skipped with why', () => {
    const clock = { now: 1_000 };
    const queue = newQueue(clock);
    const drv = path(3, 'app.drv');
    const gone = path(4, 'gone.drv');
    const store = {
      storeDir: '/nix/store',
      queryDerivationOutputs: (drvPath: string) => (drvPath === drv ? [path(5, 'app'), path(6, 'app-dev')] : []),
    };
    queue.paths.enqueue([path(1, 'from-enqueue')], 'cli');
    const spool = spoolDirOf(queue.file);
    mkdirSync(spool, { recursive: true });
    writeFileSync(
      join(spool, 'a'),
      `out ${path(2, 'built')}\ndrv ${drv}\ndrv ${gone}\nout /tmp/not-a-store-path\nnonsense\n`,
    );
    writeFileSync(join(spool, '.half-written'), `out ${path(7, 'not-yet')}\n`);
    new Intake(queue.paths, spool, store, log, () => clock.now).takeIn();

    const counts = queue.paths.counts();
    assert.deepEqual(
      { pending: counts.pending, failed: counts.failed, inbox: counts.inbox },
      { pending: 4, failed: 1, inbox: 0 },
    );
    assert.deepEqual(
      [...queue.paths.statesOf([path(1, 'from-enqueue'), path(2, 'built'), path(5, 'app'), path(6, 'app-dev'), gone])],
      [
        [path(1, 'from-enqueue'), 'pending'],
        [path(2, 'built'), 'pending'],
        [path(5, 'app'), 'pending'],
        [path(6, 'app-dev'), 'pending'],
        [gone, 'failed'],
      ].sort(),
    );
    assert.match(
      queue.paths.failedPaths(1)[0]?.lastError ?? '',
      /^PATH_NOT_VALID: the derivation .*gone\.drv has no valid/,
    );
    assert.deepEqual(
      readdirSync(spool),
      ['.half-written'],
      'the spool file taken in is removed, the unfinished one left',
    );
    queue.close();
  });
});

describe('counters', () => {
  it('counts since the start and rates over the last minute', async () => {
    const uploadSeconds = uploadDurationHistogram();
    const counters = new Counters(0, uploadSeconds);
    counters.uploaded({ paths: 30, narBytes: 3000, fileBytes: 1000, seconds: 2 }, 10_000);
    counters.uploaded({ paths: 60, narBytes: 6000, fileBytes: 2000, seconds: 3 }, 70_000);
    counters.failed('CACHE_UNREACHABLE');
    counters.failed('CACHE_UNREACHABLE');
    counters.failed('NAR_HASH_MISMATCH');
    counters.retried();
    const counts = counters.counts(70_001);
    assert.deepEqual(
      { ...counts },
      {
        uploadedPaths: 90,
        uploadedNarBytes: 9000,
        uploadedFileBytes: 3000,
        failedAttempts: 3,
        retries: 1,
        // the first batch is more than a minute old by now
        pathsPerSecond: 1,
        narBytesPerSecond: 100,
      },
    );
    assert.deepEqual(
      [...counters.failuresByCode],
      [
        ['CACHE_UNREACHABLE', 2],
        ['NAR_HASH_MISMATCH', 1],
      ],
    );
    const observed = await uploadSeconds.get();
    assert.equal(observed.values.find((v) => v.metricName === 'cachectl_upload_duration_seconds_count')?.value, 2);
    // Early on, the rate is over the time since the start (at least a second), not a whole minute.
    const young = new Counters(0);
    young.uploaded({ paths: 10, narBytes: 0, fileBytes: 0, seconds: 1 }, 5_000);
    assert.equal(young.counts(5_000).pathsPerSecond, 2);
  });
});

describe('heartbeat', () => {
  it("writes the daemon's record every beat, and STATUS= only when the line changes and never while starting", () => {
    const clock = { now: 1_000_000 };
    const queue = newQueue(clock);
    const sent: Record<string, string>[] = [];
    let status: DaemonStatus = {
      state: 'starting',
      uploadedPaths: 0,
      uploadedNarBytes: 0,
      uploadedFileBytes: 0,
      failedAttempts: 0,
      retries: 0,
      pathsPerSecond: 0,
      narBytesPerSecond: 0,
      jobs: 8,
    };
    const notifier = { notify: (fields: Record<string, string>) => sent.push(fields), close: () => undefined };
    const heartbeat = new Heartbeat(queue, () => status, { notifier, log, now: () => clock.now, startedAt: 999_000 });
    heartbeat.beat();
    assert.equal(queue.daemon.read()?.status?.state, 'starting');
    assert.deepEqual(sent, [], 'nothing to systemd before READY');
    status = { ...status, state: 'idle' };
    clock.now += 2000;
    heartbeat.beat();
    heartbeat.beat();
    assert.deepEqual(sent, [{ STATUS: 'idle: 0 pending, 0 uploading, 0 done, 0 failed; 0.0 paths/s' }]);
    assert.equal(queue.daemon.read()?.heartbeatAt, clock.now);
    queue.paths.enqueue([path(1, 'queued')], 'cli');
    status = { ...status, state: 'paused', pausedUntil: clock.now + 5000, pauseReason: 'CACHE_UNREACHABLE: down' };
    heartbeat.beat();
    assert.deepEqual(sent[1], {
      STATUS: 'paused: 1 pending, 0 uploading, 0 done, 0 failed; 0.0 paths/s; paused: CACHE_UNREACHABLE: down',
    });
    assert.equal(sent.length, 2);
    queue.close();
  });
});
