import { performance } from 'node:perf_hooks';
import { errorText } from '../core/errors.js';
import { DELETE_BATCH_KEYS, type CacheBackend } from '../cache/backend.js';
import { SWEEPS_PREFIX } from '../cache/layout.js';
import { instanceId, LEASE_LINGER_MS, SWEEP_WINDOW_MS } from './lease.js';
import type { ObjectTable, PathSet } from './inventory.js';
import type { ChangingRoots } from './roots.js';

/** The roots as read again before a delete, with what they reach. */
export interface Protection extends ChangingRoots {
  reachable: PathSet;
}

/** Ends the sweep early, safely: the next run goes on from where this one stopped. */
export class StopSweep extends Error {}
class DeleteTimeout extends Error {}

export interface SweepOptions {
  backend: CacheBackend;
  /** reads the pins and leases again, and extends what is reachable */
  protection: () => Promise<Protection>;
  startedAt: number;
  /** performance.now() when the bucket was listed */
  listedAt: number;
  /** objects to delete in all, for the progress notes */
  work: number;
  note: (text: string) => void;
}

/**
 * Deletes in batches, each right after the pins and leases were read again and within what is left of
 * SWEEP_WINDOW_MS from that read (see lease.ts for why writers rely on that). While it runs, a sweep
 * announcement in the bucket tells writers to wait out the window.
 */
export class Sweeper {
  /** objects that were to go but were protected again at the last check (a new lease or pin) */
  spared = 0;
  private readonly options: SweepOptions;
  private readonly sweepKey = `${SWEEPS_PREFIX}${instanceId()}`;
  private done = 0;
  private announcedAt = -Infinity;
  // Batches shrink when a delete takes more than a quarter of the window (s3rver takes seconds for 1,000
  // keys), and grow back to S3's 1,000 when deletes are quick.
  private batchKeys = DELETE_BATCH_KEYS;

  constructor(options: SweepOptions) {
    this.options = options;
  }

  /** Deletes the objects `indexes` of `table`, except those `keep` protects at the check before their batch. */
  async deleteAll(
    table: ObjectTable,
    indexes: readonly number[],
    keep: (index: number, current: Protection) => boolean,
    onDeleted: (index: number) => void,
  ): Promise<void> {
    let timeouts = 0;
    for (let start = 0; start < indexes.length;) {
      const size = this.batchKeys;
      const started = performance.now();
      try {
        await this.deleteBatch(table, indexes.slice(start, start + size), keep, onDeleted);
        timeouts = 0;
      } catch (err) {
        // Too slow for the window: the same keys again, in smaller batches, after a new check.
        if (!(err instanceof DeleteTimeout)) throw err;
        if ((timeouts += 1) === 3) throw new StopSweep(err.message);
        this.batchKeys = Math.max(1, Math.floor(size / 4));
        continue;
      }
      const took = performance.now() - started;
      if (took > SWEEP_WINDOW_MS / 4) this.batchKeys = Math.max(1, Math.floor(this.batchKeys / 2));
      else if (took < SWEEP_WINDOW_MS / 16) this.batchKeys = Math.min(DELETE_BATCH_KEYS, this.batchKeys * 2);
      start += size;
    }
  }

  /** Takes the announcement down (best effort: a stale one is ignored by writers after a while). */
  async end(): Promise<void> {
    await this.options.backend.delete([this.sweepKey]).catch(() => undefined);
  }

  private async deleteBatch(
    table: ObjectTable,
    indexes: readonly number[],
    keep: (index: number, current: Protection) => boolean,
    onDeleted: (index: number) => void,
  ): Promise<void> {
    const { backend } = this.options;
    if (performance.now() - this.options.listedAt > LEASE_LINGER_MS / 2) {
      throw new StopSweep(
        `the listing is older than ${LEASE_LINGER_MS / 2 / 60_000} min, so new narinfos might be missed`,
      );
    }
    // The announcement is rewritten now and then, so that one left by a killed GC is seen to be stale.
    if (performance.now() - this.announcedAt > 60_000) {
      const announcement = `${JSON.stringify({ startedAt: new Date(this.options.startedAt).toISOString() })}\n`;
      await backend.put(this.sweepKey, Buffer.from(announcement), 'stateJson');
      this.announcedAt = performance.now();
    }
    const current = await this.options.protection();
    if (current.unreadableLeases.length > 0) {
      throw new StopSweep(
        `the live leases ${current.unreadableLeases.join(', ')} cannot be read, so what they protect is unknown`,
      );
    }
    const batch = indexes.filter((index) => !keep(index, current));
    this.spared += indexes.length - batch.length;
    const timeoutMs = current.leasesListedAt + SWEEP_WINDOW_MS - performance.now();
    if (timeoutMs < SWEEP_WINDOW_MS / 2)
      throw new StopSweep('reading the leases took too long to delete safely after it');
    if (batch.length > 0) {
      const sentAt = performance.now();
      try {
        await backend.delete(
          batch.map((index) => table.key(index)),
          { timeoutMs },
        );
      } catch (err) {
        if (performance.now() - sentAt < timeoutMs) throw err;
        throw new DeleteTimeout(
          `a delete of ${batch.length} keys did not finish within ${Math.round(timeoutMs)} ms (${errorText(err)})`,
        );
      }
    }
    for (const index of batch) onDeleted(index);
    this.done += indexes.length;
    this.options.note(`deleted ${this.done} of ${this.options.work} objects`);
  }
}
