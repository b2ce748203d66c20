import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { nix32Encode } from '../core/nix32.js';
import type { CacheBackend, ObjectEntry } from '../cache/backend.js';
import { LEASES_PREFIX, SWEEPS_PREFIX } from '../cache/layout.js';

/*
 * Leases: how writers and the GC share a bucket without a lock (DESIGN.md section 5).
 *
 * A writer puts a lease naming its whole closure (paths and NAR hashes) before it looks at what the cache
 * has. A GC reads the leases just before each delete batch, keeps whatever a lease names, and has the batch
 * done within SWEEP_WINDOW_MS of that read. So a writer whose lease the GC missed wrote it after the read,
 * and SWEEP_WINDOW_MS after writing the lease every delete such a batch made has taken effect. A GC marks
 * itself under SWEEPS_PREFIX before its first read and unmarks when done. A writer that finds a mark right
 * after writing its lease waits out the window before its first look at the cache; one that finds none need
 * not wait (any earlier sweep was over before its first look).
 *
 * Looking first and checking again after the window is not enough: a writer may publish a narinfo over a NAR a
 * late batch deletes, and a second writer, seeing that narinfo, be done before the first repairs it.
 * test/unit/lease-protocol.test.ts explores every interleaving of two writers and a GC, and finds that.
 *
 * Finished closures stay in the lease for LEASE_LINGER_MS: a GC whose listing of narinfos is younger than
 * that sees either the lease or the closure's narinfos.
 */

/** A lease protects for this long after its last write, measured from the object's Last-Modified. */
export const LEASE_TTL_MS = 15 * 60_000;
/** Writers rewrite their lease this often while it names anything. */
const LEASE_REFRESH_MS = 5 * 60_000;
/** A finished closure stays in its writer's lease this long (the GC re-lists narinfos older than half of it). */
export const LEASE_LINGER_MS = 10 * 60_000;
/** How far apart the clocks of writers, GC and the S3 server may be. */
export const CLOCK_SKEW_MS = 5 * 60_000;
/**
 * A GC's delete takes effect within this of the lease listing that allowed it. Writers that find a sweep wait
 * this long after writing their lease before they re-check; the GC needs a good part of it for the listing
 * (seconds on s3rver, whose listings read every object of the bucket).
 */
export const SWEEP_WINDOW_MS = 20_000;

/** What a lease object holds. */
export interface LeaseContent {
  writer: string;
  /** store path base names */
  paths: string[];
  /** nix32 NarHashes, naming NARs not yet described by a narinfo */
  narHashes: string[];
}

/** The content of a lease object, or undefined when it is not one. */
export function parseLease(text: string): LeaseContent | undefined {
  let lease: Partial<LeaseContent>;
  try {
    lease = JSON.parse(text) as Partial<LeaseContent>;
  } catch {
    return undefined;
  }
  const strings = (list: unknown): list is string[] =>
    Array.isArray(list) && list.every((item) => typeof item === 'string');
  if (typeof lease.writer !== 'string' || !strings(lease.paths) || !strings(lease.narHashes)) return undefined;
  return { writer: lease.writer, paths: lease.paths, narHashes: lease.narHashes };
}

/** Whether a lease object still protects what it names, by its Last-Modified. */
export function leaseIsLive(entry: ObjectEntry, now: number): boolean {
  return entry.lastModified.getTime() + LEASE_TTL_MS + CLOCK_SKEW_MS > now;
}

/** Whether some GC is sweeping (or was killed while sweeping and its mark is not yet cleared). */
export async function gcSweeping(backend: CacheBackend): Promise<boolean> {
  for await (const page of backend.list(SWEEPS_PREFIX)) {
    if (page.length > 0) return true;
  }
  return false;
}

/**
 * Waits until SWEEP_WINDOW_MS after `since` (a performance.now() taken once a lease or pin was in the bucket):
 * by then every delete that a sweep allowed without seeing it has taken effect.
 */
export async function waitOutSweeps(since: number): Promise<void> {
  await sleep(Math.max(0, since + SWEEP_WINDOW_MS - performance.now()));
}

/** Names this process among all writers and GCs of a bucket: `<host>-<pid>-<random>`. */
export function instanceId(): string {
  return `${hostname()
    .replace(/[^A-Za-z0-9.-]/g, '_')
    .slice(0, 64)}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A closure a writer holds: release it once published. */
export interface LeaseHold {
  /**
   * whether the writer must check its closure again: a refresh of the lease failed while it held it, so the
   * lease may have lapsed, and a GC deleted what it names
   */
  mustRecheck(): boolean;
  /** performance.now() when the lease was in the bucket */
  readonly heldAt: number;
  release(): void;
}

interface Claim {
  paths: string[];
  narHashes: string[];
  releasedAt?: number;
}

/**
 * One writer's lease (`cachectl/leases/<host>-<pid>-<random>`): the closures it is uploading and those it
 * finished within LEASE_LINGER_MS, rewritten on every new closure and every LEASE_REFRESH_MS.
 */
export class LeaseWriter {
  readonly key: string;
  private readonly claims = new Set<Claim>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  /** count of refreshes that failed: a hold during which one failed may have lapsed */
  private failedRefreshes = 0;

  constructor(
    private readonly backend: CacheBackend,
    private readonly now: () => number = Date.now,
  ) {
    this.key = `${LEASES_PREFIX}${instanceId()}`;
  }

  /**
   * Adds a closure to the lease and writes it, before the writer checks what the cache has. Resolves once the
   * lease is in the bucket and no sweep can still delete what it names without having seen it: at once, or
   * SWEEP_WINDOW_MS after the lease was written when a GC is sweeping.
   */
  async hold(closure: readonly { path: string; narHash: Uint8Array }[]): Promise<LeaseHold> {
    const claim: Claim = {
      paths: closure.map((info) => basename(info.path)),
      narHashes: closure.map((info) => nix32Encode(info.narHash)),
    };
    this.claims.add(claim);
    this.timer ??= setInterval(
      () => void this.write().catch(() => (this.failedRefreshes += 1)),
      LEASE_REFRESH_MS,
    ).unref();
    try {
      await this.write();
    } catch (err) {
      this.claims.delete(claim);
      throw err;
    }
    const heldAt = performance.now();
    const failuresBefore = this.failedRefreshes;
    if (await gcSweeping(this.backend)) await waitOutSweeps(heldAt);
    return {
      heldAt,
      mustRecheck: () => this.failedRefreshes !== failuresBefore,
      release: () => {
        claim.releasedAt = this.now();
      },
    };
  }

  /** Stops refreshing; the lease object stays until it expires, so recent closures stay protected. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Writes the lease as it is now (writes are serialized); drops claims finished long enough ago. */
  private write(): Promise<void> {
    const next = this.writing.then(async () => {
      const now = this.now();
      for (const claim of this.claims) {
        if (claim.releasedAt !== undefined && now - claim.releasedAt > LEASE_LINGER_MS) this.claims.delete(claim);
      }
      if (this.claims.size === 0) {
        await this.backend.delete([this.key]);
        this.close();
        return;
      }
      const content: LeaseContent = {
        writer: this.key.slice(LEASES_PREFIX.length),
        paths: [...new Set([...this.claims].flatMap((claim) => claim.paths))].sort(),
        narHashes: [...new Set([...this.claims].flatMap((claim) => claim.narHashes))].sort(),
      };
      await this.backend.put(this.key, Buffer.from(`${JSON.stringify(content)}\n`), 'stateJson');
    });
    this.writing = next.catch(() => undefined);
    return next;
  }
}
