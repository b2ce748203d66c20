import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { backoffMs } from '../../src/core/backoff.js';
import { CachectlError } from '../../src/core/errors.js';
import { parseDaemonStatus, type DaemonStatus } from '../../src/queue/daemon-record.js';
import { lastErrorText } from '../../src/queue/paths.js';
import { Queue } from '../../src/queue/queue.js';
import { HOOK_INBOXES, hookInboxFiles, MIGRATIONS } from '../../src/queue/schema.js';
import { tempDir } from '../helpers/nix.js';

const P1 = '/nix/store/00000000000000000000000000000001-one';
const P2 = '/nix/store/00000000000000000000000000000002-two';
const RETRY = { baseMs: 1000, capMs: 8000 };

/** A queue in a new directory with a clock the test moves. */
function newQueue(options: { maxAttempts?: number; random?: () => number } = {}) {
  const clock = { now: 1_000_000 };
  const file = join(tempDir('queue-unit'), 'sub', 'queue.db');
  const queue = Queue.open(file, {
    now: () => clock.now,
    retry: RETRY,
    maxAttempts: options.maxAttempts ?? 3,
    random: options.random ?? (() => 0.5),
  });
  return { queue, clock, file };
}

function row(file: string, storePath: string) {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare('SELECT * FROM paths WHERE store_path = ?').get(storePath) as
      | {
          state: string;
          attempts: number;
          next_attempt_at: number;
          lease_until: number | null;
          last_error: string | null;
        }
      | undefined;
  } finally {
    db.close();
  }
}

describe('queue', () => {
  it('is created 0600 in a 0700 directory, in WAL mode, at the current schema version, and reopens as it is', () => {
    const { queue, file } = newQueue();
    queue.close();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(file, '..')).mode & 0o777, 0o700);
    const db = new Database(file);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
    db.close();
    assert.equal(hookInboxFiles(file).length, HOOK_INBOXES);
    for (const inboxFile of hookInboxFiles(file)) assert.equal(statSync(inboxFile).mode & 0o777, 0o600);
    assert.equal(statSync(`${file}.inbox`).mode & 0o777, 0o700);
    Queue.open(file).close();
    Queue.openExisting(file, { readonly: true }).close();
  });

  it('refuses a queue made by a newer cachectl, a corrupt file, and a missing one where it must exist', () => {
    const { queue, file } = newQueue();
    queue.close();
    const db = new Database(file);
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    assert.throws(
      () => Queue.open(file),
      (err: CachectlError) =>
        err.code === 'QUEUE_UNREADABLE' &&
        /was made by a newer cachectl \(schema \d+; this one knows \d+\); upgrade cachectl\. Its paths are kept$/.test(
          err.message,
        ),
    );
    const corrupt = join(tempDir('queue-corrupt'), 'queue.db');
    writeFileSync(corrupt, 'this is not a database, just some bytes that are long enough '.repeat(100));
    assert.throws(
      () => Queue.open(corrupt),
      (err: CachectlError) => err.code === 'QUEUE_UNREADABLE' && /not a database.*move it aside/.test(err.message),
    );
    assert.throws(
      () => Queue.openExisting(join(tempDir('queue-none'), 'queue.db')),
      (err: CachectlError) =>
        err.code === 'QUEUE_MISSING' && /does not exist; is cachectl daemon running/.test(err.message),
    );
  });

  it('takes the inbox in once: a path enqueued many times is one pending row', () => {
    const { queue, file } = newQueue();
    queue.paths.enqueue([P1, P1, P2], 'hook');
    queue.paths.enqueue([P1], 'cli');
    assert.equal(queue.paths.counts().inbox, 4);
    assert.equal(queue.paths.ingestInbox(), 4);
    assert.deepEqual(queue.paths.counts(), { pending: 2, uploading: 0, done: 0, failed: 0, inbox: 0 });
    assert.equal(queue.paths.ingestInbox(), 0);
    assert.equal(row(file, P1)?.state, 'pending');
  });

  it("takes in the hooks' inbox files too, with what they held; oldest pending age counts them", () => {
    const { queue, clock, file } = newQueue();
    const hookInsert = (n: number, storePath: string, at: number) => {
      const db = new Database(hookInboxFiles(file)[n]);
      db.prepare(`INSERT INTO inbox (store_path, source, enqueued_at) VALUES (?, 'hook', ?)`).run(storePath, at);
      db.close();
    };
    hookInsert(0, P1, clock.now - 5000);
    hookInsert(HOOK_INBOXES - 1, P2, clock.now - 1000);
    hookInsert(HOOK_INBOXES - 1, P1, clock.now - 2000);
    assert.equal(queue.paths.counts().inbox, 3);
    assert.deepEqual([...queue.paths.inboxPaths()].sort(), [P1, P2]);
    assert.equal(queue.paths.oldestPendingAt(), clock.now - 5000);
    assert.equal(queue.paths.ingestInbox(), 3);
    assert.deepEqual(queue.paths.counts(), { pending: 2, uploading: 0, done: 0, failed: 0, inbox: 0 });
    assert.equal(queue.paths.ingestInbox(), 0);
  });

  it("waits for a hook's insert that is mid-commit instead of reading past it", async () => {
    // The daemon is woken by the hook's first write to the inbox's WAL, before the hook commits: the read must
    // wait for that commit (it took the next heartbeat, 2 s later, to see the path).
    const { queue, clock, file } = newQueue();
    const hook = spawn('sqlite3', ['-bail', '-batch', '-init', '/dev/null', hookInboxFiles(file)[3] as string], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => hook.once('exit', resolve));
    hook.stdin.end(
      `.timeout 5000\nBEGIN IMMEDIATE;\nINSERT INTO inbox (store_path, source, enqueued_at) VALUES ('${P1}', ` +
        `'hook', ${clock.now});\n` +
        `.shell printf inserted\n.shell sleep 0.5\nCOMMIT;\n`,
    );
    await new Promise<void>((resolve) =>
      hook.stdout.on('data', (data: Buffer) => {
        if (data.toString().includes('inserted')) resolve();
      }),
    );
    assert.equal(queue.paths.ingestInbox(), 1);
    assert.equal(await exited, 0);
    assert.deepEqual(queue.paths.counts(), { pending: 1, uploading: 0, done: 0, failed: 0, inbox: 0 });
  });

  it('counts the attempt at claim, and hands a path to one claimer only', () => {
    const { queue, clock, file } = newQueue();
    queue.paths.add([{ storePath: P1, source: 'cli', enqueuedAt: clock.now }]);
    assert.deepEqual(queue.paths.claim(10, 5000), [P1]);
    assert.deepEqual(queue.paths.claim(10, 5000), []);
    const claimed = row(file, P1);
    assert.deepEqual(
      { state: claimed?.state, attempts: claimed?.attempts, leaseUntil: claimed?.lease_until },
      { state: 'uploading', attempts: 1, leaseUntil: clock.now + 5000 },
    );
    queue.paths.complete([P1]);
    assert.equal(row(file, P1)?.state, 'done');
    assert.equal(queue.paths.uploadedSince(clock.now), 1);
    // Built again (or enqueued again): looked at again.
    queue.paths.add([{ storePath: P1, source: 'hook', enqueuedAt: clock.now }]);
    assert.equal(row(file, P1)?.state, 'pending');
  });

  it(
    'retries a retryable failure after a capped, jittered, growing backoff, then dead-letters it ' + 'with its error',
    () => {
      const { queue, clock, file } = newQueue({ maxAttempts: 3 });
      queue.paths.add([{ storePath: P1, source: 'hook', enqueuedAt: clock.now }]);
      const waits: number[] = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        assert.deepEqual(queue.paths.claim(1, 5000), [P1], `attempt ${attempt}`);
        const state = queue.paths.fail(P1, { code: 'CACHE_WRITE_FAILED', message: 'flaky' }, true);
        if (attempt < 3) {
          assert.equal(state, 'pending');
          const next = row(file, P1)?.next_attempt_at ?? 0;
          waits.push(next - clock.now);
          assert.deepEqual(queue.paths.claim(1, 5000), [], 'not due before its backoff');
          clock.now = next;
        } else {
          assert.equal(state, 'failed');
        }
      }
      // random 0.5: three quarters of 1 s, then of 2 s
      assert.deepEqual(waits, [750, 1500]);
      const failed = row(file, P1);
      assert.equal(failed?.state, 'failed');
      assert.equal(failed?.last_error, 'CACHE_WRITE_FAILED: flaky (gave up after 3 attempts)');
      assert.deepEqual(
        queue.paths.failedPaths(10).map((f) => [f.storePath, f.attempts]),
        [[P1, 3]],
      );
    },
  );

  it('fails a path at once when trying again cannot help, and retry gives it fresh attempts', () => {
    const { queue, clock, file } = newQueue();
    queue.paths.add([
      { storePath: P1, source: 'hook', enqueuedAt: clock.now },
      { storePath: P2, source: 'hook', enqueuedAt: clock.now },
    ]);
    queue.paths.claim(10, 5000);
    assert.equal(queue.paths.fail(P1, { code: 'NAR_HASH_MISMATCH', message: 'corrupt' }, false), 'failed');
    assert.equal(row(file, P1)?.attempts, 1);
    assert.deepEqual(queue.paths.retry([P1, P2]), [P1], 'P2 is uploading, not failed');
    assert.deepEqual(
      { state: row(file, P1)?.state, attempts: row(file, P1)?.attempts },
      { state: 'pending', attempts: 0 },
    );
    assert.deepEqual(queue.paths.retry(), []);
  });

  it(
    'gives back expired leases (and all of them when a daemon starts); a path that killed the daemon too ' +
      'often fails',
    () => {
      const { queue, clock, file } = newQueue({ maxAttempts: 2 });
      queue.paths.add([
        { storePath: P1, source: 'hook', enqueuedAt: clock.now },
        { storePath: P2, source: 'hook', enqueuedAt: clock.now },
      ]);
      queue.paths.claim(1, 1000);
      clock.now += 500;
      queue.paths.claim(1, 1000);
      clock.now += 600; // P1's lease ended, P2's did not
      assert.equal(queue.paths.recoverAbandoned(false), 1);
      assert.equal(row(file, P1)?.state, 'pending');
      assert.equal(row(file, P2)?.state, 'uploading');
      queue.paths.renewLeases([P2], 10_000);
      assert.equal(row(file, P2)?.lease_until, clock.now + 10_000);
      assert.equal(queue.paths.recoverAbandoned(true), 1);
      assert.equal(row(file, P2)?.state, 'pending');
      // Claimed and abandoned again: that was its second (last) attempt.
      queue.paths.claim(10, 1000);
      assert.equal(queue.paths.recoverAbandoned(true), 2);
      for (const path of [P1, P2]) {
        assert.equal(row(file, path)?.state, 'failed');
        assert.match(
          row(file, path)?.last_error ?? '',
          /the daemon stopped 2 times while uploading this path .* cachectl retry/,
        );
      }
    },
  );

  it('release hands a claim back without using up an attempt', () => {
    const { queue, clock, file } = newQueue();
    queue.paths.add([{ storePath: P1, source: 'hook', enqueuedAt: clock.now }]);
    queue.paths.claim(1, 1000);
    queue.paths.release([P1], clock.now + 3000, { code: 'CACHE_UNREACHABLE', message: 'down' });
    assert.deepEqual(
      {
        state: row(file, P1)?.state,
        attempts: row(file, P1)?.attempts,
        due: row(file, P1)?.next_attempt_at,
        error: row(file, P1)?.last_error,
      },
      { state: 'pending', attempts: 0, due: clock.now + 3000, error: 'CACHE_UNREACHABLE: down' },
    );
    assert.equal(queue.paths.nextDueAt(), clock.now + 3000);
  });

  it('backoff doubles from its base up to its cap, with at most half of each step random', () => {
    assert.equal(backoffMs(1, RETRY, 0), 500);
    assert.equal(backoffMs(1, RETRY, 0.999999), 1000);
    assert.equal(backoffMs(3, RETRY, 0), 2000);
    assert.equal(backoffMs(10, RETRY, 0), 4000);
    assert.equal(backoffMs(50, RETRY, 0.999999), 8000);
  });
});

describe('daemon record', () => {
  const status: DaemonStatus = {
    state: 'paused',
    uploadedPaths: 3,
    uploadedNarBytes: 4096,
    uploadedFileBytes: 1024,
    failedAttempts: 1,
    retries: 1,
    pathsPerSecond: 0.5,
    narBytesPerSecond: 68.2,
    jobs: 4,
    pausedUntil: 1_000_500,
    pauseReason: 'CACHE_UNREACHABLE: down',
  };

  it('reads back the status the daemon wrote, field for field', () => {
    const { queue, clock } = newQueue();
    queue.daemon.write({ pid: 42, host: 'builder', startedAt: 999_000, status });
    assert.deepEqual(queue.daemon.read(), {
      pid: 42,
      host: 'builder',
      startedAt: 999_000,
      heartbeatAt: clock.now,
      status,
    });
    queue.daemon.clear(42);
    assert.equal(queue.daemon.read(), undefined);
    queue.close();
  });

  it('reads a status with a missing, mistyped or unknown field as unreadable', () => {
    const { pausedUntil: _until, pauseReason: _reason, ...running } = status;
    assert.deepEqual(parseDaemonStatus(JSON.stringify({ ...running, state: 'idle' })), { ...running, state: 'idle' });
    const { jobs: _jobs, ...noJobs } = status;
    assert.equal(parseDaemonStatus(JSON.stringify(noJobs)), undefined);
    assert.equal(parseDaemonStatus(JSON.stringify({ ...status, uploadedPaths: '3' })), undefined);
    assert.equal(parseDaemonStatus(JSON.stringify({ ...status, state: 'sleeping' })), undefined);
    assert.equal(parseDaemonStatus('{"state":'), undefined);
    assert.equal(parseDaemonStatus('null'), undefined);
  });
});

describe('last_error', () => {
  it('is made from the error in one place: CODE: message, never empty', () => {
    assert.equal(lastErrorText({ code: 'CACHE_UNREACHABLE', message: 'down' }), 'CACHE_UNREACHABLE: down');
    assert.equal(lastErrorText({ message: 'the daemon stopped' }), 'the daemon stopped');
    assert.match(lastErrorText({ code: 'INTERNAL', message: '' }), /^INTERNAL: \S/);
    assert.notEqual(lastErrorText({ code: '', message: '' }), '');
  });
});
