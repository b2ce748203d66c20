import { performance } from 'node:perf_hooks';
import { mapLimit } from '../core/limit.js';
import { baseNameProblem, hashPartOf } from '../core/store-path.js';
import { listAll, type CacheBackend, type ObjectEntry } from '../cache/backend.js';
import { LEASES_PREFIX, PINS_PREFIX } from '../cache/layout.js';
import { leaseIsLive, parseLease, type LeaseContent } from './lease.js';
import { parsePin } from './pins.js';

/** The roots that change while a GC runs, as read from the bucket at one moment. */
export interface ChangingRoots {
  /** hash parts of pinned paths */
  pinned: Set<string>;
  /** hash parts of the paths of live leases */
  leased: Set<string>;
  /** NAR hashes named by live leases: NARs whose narinfo may not be written yet */
  narHashes: Set<string>;
  liveLeaseKeys: Set<string>;
  /** performance.now() when the listing of the leases began: the window of a delete counts from here */
  leasesListedAt: number;
  staleLeases: ObjectEntry[];
  /** live leases that are not cachectl's: nothing may be deleted while one is there */
  unreadableLeases: string[];
  problems: string[];
}

/**
 * Reads the pins and the live leases; GETs and parses only the objects whose ETag changed since its last read
 * (a sweep reads them before each of its batches, and a pin may name thousands of paths).
 */
export class RootReader {
  private readonly pins = new Cache<ReturnType<typeof parsePin>>();
  private readonly leases = new Cache<LeaseContent | 'unreadable'>();

  constructor(private readonly backend: CacheBackend) {}

  async read(now: number): Promise<ChangingRoots> {
    // Pins first: only the leases have to be fresh when a delete goes out (pin waits out a sweep by itself).
    const pinList = await listAll(this.backend, PINS_PREFIX);
    const pins = await mapLimit(pinList, 16, (entry) =>
      this.pins.read(this.backend, entry, (text) => parsePin(text, entry.key)),
    );
    const leasesListedAt = performance.now();
    const leaseList = await listAll(this.backend, LEASES_PREFIX);
    const roots: ChangingRoots = {
      pinned: new Set(),
      leased: new Set(),
      narHashes: new Set(),
      liveLeaseKeys: new Set(),
      leasesListedAt,
      staleLeases: leaseList.filter((entry) => !leaseIsLive(entry, now)),
      unreadableLeases: [],
      problems: [],
    };
    const live = leaseList.filter((entry) => leaseIsLive(entry, now));
    const leases = await mapLimit(live, 16, (entry) =>
      this.leases.read(this.backend, entry, (text) => parseLease(text) ?? 'unreadable'),
    );
    for (const pin of pins) {
      if (pin === undefined) continue; // unpinned meanwhile
      roots.problems.push(...pin.problems);
      for (const hashPart of pin.hashParts) roots.pinned.add(hashPart);
    }
    live.forEach((entry, i) => {
      const lease = leases[i];
      if (lease === undefined) return; // its writer is done with it
      roots.liveLeaseKeys.add(entry.key);
      if (lease === 'unreadable') {
        roots.unreadableLeases.push(entry.key);
        roots.problems.push(`${entry.key} is not a cachectl lease; nothing is deleted while it is live`);
        return;
      }
      for (const path of lease.paths) if (baseNameProblem(path) === undefined) roots.leased.add(hashPartOf(path));
      for (const narHash of lease.narHashes) roots.narHashes.add(narHash);
    });
    return roots;
  }
}

/** Objects read and parsed, by key, while their ETag stays the same. */
class Cache<T> {
  private readonly entries = new Map<string, { etag: string; value: T | undefined }>();

  /** The parsed object, or undefined when it is gone since the listing. */
  async read(backend: CacheBackend, entry: ObjectEntry, parse: (text: string) => T): Promise<T | undefined> {
    const cached = this.entries.get(entry.key);
    if (cached?.etag === entry.etag) return cached.value;
    const text = (await backend.get(entry.key))?.toString('utf8');
    const value = text === undefined ? undefined : parse(text);
    this.entries.set(entry.key, { etag: entry.etag, value });
    return value;
  }
}
