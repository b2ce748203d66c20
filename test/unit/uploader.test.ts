import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { CachectlError } from '../../src/core/errors.js';
import type { DaemonState } from '../../src/queue/daemon-record.js';
import {
  initialPause,
  pauseFor,
  pausingTrouble,
  recovered,
  retryWaitMs,
  type Trouble,
} from '../../src/daemon/policy.js';
import { Uploader, type BatchOutcome, type UploaderWork } from '../../src/daemon/uploader.js';

const log = pino({ level: 'silent' });
/** how long an idle uploader sleeps when nothing is due */
const IDLE_CHECK_MS = 10_000;
const unreachable: Trouble = { code: 'CACHE_UNREACHABLE', message: 'down' };
const throttled: Trouble = { code: 'CACHE_THROTTLED', message: 'slow down' };

describe('pause policy', () => {
  it('pauses 1 s, 2 s, 4 s … up to a minute while shared trouble lasts, and never shortens a pause', () => {
    let state = initialPause(8);
    const waits: number[] = [];
    for (let i = 0; i < 9; i++) {
      const now = 1_000_000 + i;
      state = pauseFor(state, unreachable, now);
      waits.push(state.pausedUntil - now);
    }
    // backoff at the middle of its jitter: three quarters of each step
    assert.deepEqual(waits.slice(0, 7), [750, 1500, 3000, 6000, 12_000, 24_000, 45_000]);
    assert.equal(waits.at(-1), 45_000, 'capped at the minute step');
    assert.equal(state.reason, 'CACHE_UNREACHABLE: down');
    assert.equal(state.jobs, 8, 'an outage does not change the parallelism');
    const longer = pauseFor({ ...state, pausedUntil: 5_000_000 }, unreachable, 1_000_000);
    assert.equal(longer.pausedUntil, 5_000_000);
  });

  it('keeps the pause at its first step after a batch that still got paths through: a flaky cache, not a down one', () => {
    let state = initialPause(8);
    for (let i = 0; i < 6; i++) state = pauseFor(state, unreachable, 0);
    assert.equal(state.pausedUntil, 24_000);
    const flaky = pauseFor({ ...state, pausedUntil: 0 }, unreachable, 100_000, true);
    assert.deepEqual([flaky.level, flaky.pausedUntil - 100_000], [1, 750]);
    assert.equal(pauseFor(flaky, unreachable, 200_000).pausedUntil - 200_000, 1500, 'escalating again from there');
  });

  it('waits at least what the server asked for', () => {
    const state = pauseFor(initialPause(8), { ...throttled, retryAfterMs: 30_000 }, 0);
    assert.equal(state.pausedUntil, 30_000);
  });

  it('halves the uploads at once on throttling, down to one, and grows them back one step per good batch', () => {
    let state = initialPause(8);
    const jobs: number[] = [];
    for (let i = 0; i < 5; i++) jobs.push((state = pauseFor(state, throttled, 0)).jobs);
    assert.deepEqual(jobs, [4, 2, 1, 1, 1]);
    const grown: number[] = [];
    for (let i = 0; i < 9; i++) grown.push((state = recovered(state, 8)).jobs);
    assert.deepEqual(grown, [2, 3, 4, 5, 6, 7, 8, 8, 8]);
    assert.equal(state.level, 0);
    assert.equal(state.reason, undefined);
  });

  it('picks the trouble that pauses: throttling first, then other shared trouble, never a path’s own', () => {
    const corrupt = { code: 'NAR_HASH_MISMATCH', message: 'corrupt' };
    assert.equal(pausingTrouble([corrupt]), undefined);
    assert.equal(pausingTrouble([corrupt, unreachable, throttled]), throttled);
    assert.equal(
      pausingTrouble([corrupt, { code: 'NIX_STORE_UNREADABLE', message: 'locked' }])?.code,
      'NIX_STORE_UNREADABLE',
    );
  });

  it('spreads the waits of other trouble with jitter', () => {
    assert.equal(retryWaitMs(1, 0), 500);
    assert.equal(retryWaitMs(1, 0.999), 1000);
    assert.equal(retryWaitMs(20, 0), 30_000);
  });
});

/** A clock the uploader's sleeps move: a sleep returns at once, having advanced the time. */
function fakeTime() {
  const time = { now: 1_000_000, slept: [] as number[] };
  return {
    time,
    now: () => time.now,
    sleep: (ms: number) => {
      time.slept.push(ms);
      time.now += ms;
      return Promise.resolve();
    },
  };
}

interface Recorded {
  roots: readonly string[];
  failures: string[];
  resumeAt: number | undefined;
}

/** The uploader over a fake queue of `roots` and a fake push that answers with `outcomes` in turn. */
function harness(options: {
  queued: string[][];
  outcomes: ((roots: readonly string[]) => BatchOutcome)[];
  ready?: (() => Promise<void>)[];
  /** thrown by takeIn, one per turn, until none is left */
  takeInErrors?: Error[];
}) {
  const clock = fakeTime();
  const recorded: Recorded[] = [];
  const released: string[][] = [];
  const states: DaemonState[] = [];
  const pauses: string[] = [];
  const takeInErrors = [...(options.takeInErrors ?? [])];
  const jobsSeen: number[] = [];
  const controller = new AbortController();
  const queued = [...options.queued];
  const outcomes = [...options.outcomes];
  const ready = [...(options.ready ?? [])];
  let uploader: Uploader<BatchOutcome> | undefined = undefined;
  const work: UploaderWork<BatchOutcome> = {
    ready: () => ready.shift()?.() ?? Promise.resolve(),
    takeIn: () => {
      const err = takeInErrors.shift();
      if (err !== undefined) throw err;
    },
    claim: () => queued.shift() ?? [],
    upload: (roots, jobs) => {
      jobsSeen.push(jobs);
      const outcome = outcomes.shift();
      return outcome === undefined ? new Promise(() => undefined) : Promise.resolve(outcome(roots));
    },
    record: (roots, outcome, resumeAt) => recorded.push({ roots, failures: [...outcome.failures.keys()], resumeAt }),
    release: (roots) => released.push([...roots]),
    nextDueAt: () => undefined,
  };
  uploader = new Uploader(work, {
    jobs: 8,
    signal: controller.signal,
    queueFile: '/tmp/queue.db',
    log,
    now: clock.now,
    random: () => 0.5,
    // Idle with nothing left to claim: the test is over, and a stop comes, as a SIGTERM would.
    sleep: (ms) => (queued.length === 0 && ms === IDLE_CHECK_MS ? Promise.resolve(uploader?.stop()) : clock.sleep(ms)),
    wake: () => undefined,
    onState: (state) => states.push(state),
    onPause: (code) => pauses.push(code),
  });
  return { uploader, clock, recorded, released, states, pauses, jobsSeen, controller };
}

const allDone = (roots: readonly string[]): BatchOutcome => ({
  failures: new Map(),
  completed: true,
  uploadedRoots: roots,
});
const allFail =
  (trouble: Trouble) =>
  (roots: readonly string[]): BatchOutcome => ({
    failures: new Map(roots.map((root) => [root, trouble])),
    completed: true,
    uploadedRoots: [],
  });

describe('uploader loop', () => {
  it('claims, uploads and records each batch, then stops when told', async () => {
    const h = harness({ queued: [['a', 'b'], ['c']], outcomes: [allDone, allDone] });
    let readyCalls = 0;
    await h.uploader.run(() => (readyCalls += 1));
    assert.equal(readyCalls, 1);
    assert.deepEqual(h.recorded, [
      { roots: ['a', 'b'], failures: [], resumeAt: undefined },
      { roots: ['c'], failures: [], resumeAt: undefined },
    ]);
    assert.deepEqual(h.states, ['idle', 'uploading', 'idle', 'draining']);
    assert.deepEqual(h.released, []);
    // The signal lives as long as the daemon: a finished batch leaves no listener on it.
    assert.equal(getEventListeners(h.controller.signal, 'abort').length, 0);
  });

  it('pauses on shared trouble: records the roots with the time it resumes, sleeps it out, then goes on', async () => {
    const h = harness({
      queued: [['a'], ['a'], ['a']],
      outcomes: [allFail(unreachable), allFail(unreachable), allDone],
    });
    await h.uploader.run(() => undefined);
    const [first, second, third] = h.recorded;
    assert.equal(first?.resumeAt, 1_000_000 + 750);
    assert.equal(second?.resumeAt, 1_000_000 + 750 + 1500);
    assert.equal(third?.resumeAt, undefined);
    assert.deepEqual(h.clock.time.slept, [750, 1500]);
    assert.ok(h.states.includes('paused'));
    assert.deepEqual(h.pauses, ['CACHE_UNREACHABLE', 'CACHE_UNREACHABLE']);
  });

  it('pauses when the queue cannot be written (a full disk), counted under the SQLite code, then goes on', async () => {
    const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    const h = harness({ queued: [['a']], outcomes: [allDone], takeInErrors: [full] });
    await h.uploader.run(() => undefined);
    assert.deepEqual(h.pauses, ['SQLITE_FULL']);
    assert.equal(h.clock.time.slept.length, 1);
    assert.deepEqual(
      h.recorded.map((r) => r.roots),
      [['a']],
    );
  });

  it('does not pause for a path’s own failure', async () => {
    const h = harness({
      queued: [['a'], ['b']],
      outcomes: [allFail({ code: 'NAR_HASH_MISMATCH', message: 'corrupt' }), allDone],
    });
    await h.uploader.run(() => undefined);
    assert.deepEqual(h.pauses, []);
    assert.deepEqual(
      h.recorded.map((r) => [r.failures, r.resumeAt]),
      [
        [['a'], undefined],
        [[], undefined],
      ],
    );
    assert.deepEqual(h.clock.time.slept, []);
  });

  it('uploads fewer at once while the cache throttles, and more again after', async () => {
    const h = harness({
      queued: [['a'], ['a'], ['a'], ['a']],
      outcomes: [allFail(throttled), allFail(throttled), allDone, allDone],
    });
    await h.uploader.run(() => undefined);
    assert.deepEqual(h.jobsSeen, [8, 4, 2, 3]);
  });

  it('waits for the cache before it is ready, pausing on shared trouble', async () => {
    const down = () => Promise.reject(new CachectlError('CACHE_UNREACHABLE', 'down', { retryable: true }));
    const h = harness({ queued: [], outcomes: [], ready: [down, down] });
    let readyAt: number | undefined;
    await h.uploader.run(() => (readyAt = h.clock.time.now));
    assert.deepEqual(h.clock.time.slept, [750, 1500]);
    assert.equal(readyAt, 1_000_000 + 2250);
    assert.equal(h.states[0], 'paused');
    assert.deepEqual(h.pauses, ['CACHE_UNREACHABLE', 'CACHE_UNREACHABLE']);
  });

  it('does not wait for a cache that cannot work: the error ends the run', async () => {
    const denied = () => Promise.reject(new Error('a bug'));
    const h = harness({ queued: [], outcomes: [], ready: [denied] });
    await assert.rejects(
      h.uploader.run(() => undefined),
      /a bug/,
    );
  });

  it('abandons the batch in flight when the signal aborts: its roots go back, unrecorded', async () => {
    // The second batch's upload never ends; the stop lets it run, the signal abandons it.
    const h = harness({ queued: [['a'], ['b', 'c']], outcomes: [allDone] });
    const running = h.uploader.run(() => undefined);
    while (h.states.at(-1) !== 'uploading' || h.recorded.length < 1)
      await new Promise((resolve) => setImmediate(resolve));
    h.uploader.stop();
    assert.equal(h.uploader.status().state, 'draining');
    h.controller.abort();
    await running;
    assert.deepEqual(h.released, [['b', 'c']]);
    assert.deepEqual(
      h.recorded.map((r) => r.roots),
      [['a']],
    );
  });

  it('shows paused while a pause lasts, with its reason', async () => {
    const h = harness({ queued: [['a']], outcomes: [allFail(unreachable)] });
    // Stop before the pause is slept out: the state is read right after the batch.
    h.uploader.run(() => undefined).catch(() => undefined);
    while (h.recorded.length < 1) await new Promise((resolve) => setImmediate(resolve));
    const status = h.uploader.status();
    h.uploader.stop();
    assert.equal(status.pauseReason, 'CACHE_UNREACHABLE: down');
    assert.equal(status.jobs, 8);
  });
});
