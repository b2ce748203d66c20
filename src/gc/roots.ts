import { performance } from 'node:perf_hooks';
import { mapLimit } from '../core/limit.js';
import { baseNameProblem } from '../core/store-path.js';
import { listAll, type CacheBackend, type ObjectEntry } from '../cache/backend.js';
import { LEASES_PREFIX, PINS_PREFIX } from '../cache/layout.js';
import { leaseIsLive, parseLease } from './lease.js';
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

/** Reads the pins and the live leases; GETs only the objects whose ETag changed since its last read. */
export class RootReader {
  private readonly texts = new Map<string, { etag: string; text: string | undefined }>();

  constructor(private readonly backend: CacheBackend) {}

  async read(now: number): Promise<ChangingRoots> {
    // Pins first: only the leases have to be fresh when a delete goes out (pin waits out a sweep by itself).
    const pinList = await listAll(this.backend, PINS_PREFIX);
    const pinTexts = await mapLimit(pinList, 16, (entry) => this.text(entry));
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
    const leaseTexts = await mapLimit(live, 16, (entry) => this.text(entry));
    pinList.forEach((entry, i) => {
      const text = pinTexts[i];
      if (text === undefined) return; // unpinned meanwhile
      const pin = parsePin(text, entry.key);
      roots.problems.push(...pin.problems);
      for (const hashPart of pin.hashParts) roots.pinned.add(hashPart);
    });
    live.forEach((entry, i) => {
      const text = leaseTexts[i];
      if (text === undefined) return; // its writer is done with it
      roots.liveLeaseKeys.add(entry.key);
      const lease = parseLease(text);
      if (lease === undefined) {
        roots.unreadableLeases.push(entry.key);
        roots.problems.push(`${entry.key} is not a cachectl lease; nothing is deleted while it is live`);
        return;
      }
      for (const path of lease.paths) if (baseNameProblem(path) === undefined) roots.leased.add(path.slice(0, 32));
      for (const narHash of lease.narHashes) roots.narHashes.add(narHash);
    });
    return roots;
  }

  private async text(entry: ObjectEntry): Promise<string | undefined> {
    const cached = this.texts.get(entry.key);
    if (cached?.etag === entry.etag) return cached.text;
    const text = (await this.backend.get(entry.key))?.toString('utf8');
    this.texts.set(entry.key, { etag: entry.etag, text });
    return text;
  }
}
