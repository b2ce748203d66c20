import { performance } from 'node:perf_hooks';
import { CachectlError } from '../core/errors.js';
import { hashPartOf, parseStorePath } from '../core/store-path.js';
import type { CacheBackend } from '../cache/backend.js';
import { NAME_PATTERN, PINS_PREFIX } from '../cache/layout.js';
import { findPresent } from '../cache/present.js';
import { gcSweeping, waitOutSweeps } from './lease.js';

/** A pin's store paths (as hash parts), and the lines that are not store paths. */
export function parsePin(text: string, key: string): { paths: string[]; hashParts: string[]; problems: string[] } {
  const paths: string[] = [];
  const problems: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      paths.push(parseStorePath(line).path);
    } catch (err) {
      problems.push(
        `pin ${key}: line ${JSON.stringify(line)} is not a store path (${(err as Error).message}); ignored`,
      );
    }
  }
  return { paths, hashParts: paths.map(hashPartOf), problems };
}

function pinKey(name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new CachectlError(
      'PIN_INVALID',
      `pin name ${JSON.stringify(name)} is not allowed; use letters, digits, '.', '_' and '-' (not first), at most 128`,
    );
  }
  return `${PINS_PREFIX}${name}`;
}

/**
 * Pins `paths` (with their closures) under `name`, replacing what the pin held. The paths must be in the
 * cache. When a GC is sweeping, it checks again once the sweep can no longer miss the pin.
 */
export async function pin(backend: CacheBackend, name: string, paths: readonly string[]): Promise<void> {
  const key = pinKey(name);
  const hashParts = paths.map(hashPartOf);
  const missing = () =>
    findPresent(backend, hashParts).then((present) => paths.filter((_, i) => !present.has(hashParts[i] as string)));
  const absent = await missing();
  if (absent.length > 0) {
    throw new CachectlError(
      'PATH_NOT_IN_CACHE',
      `${absent.join(', ')} ${absent.length === 1 ? 'is' : 'are'} not in ${backend.displayUrl}; push first, then pin`,
    );
  }
  await backend.put(key, Buffer.from(paths.map((path) => `${path}\n`).join('')), 'stateText');
  const pinnedAt = performance.now();
  if (await gcSweeping(backend)) {
    await waitOutSweeps(pinnedAt);
    const gone = await missing();
    if (gone.length > 0) {
      throw new CachectlError(
        'PATH_NOT_IN_CACHE',
        `a GC running meanwhile deleted ${gone.join(', ')} from ${backend.displayUrl}; the pin ${name} is kept: ` +
          `push them again`,
      );
    }
  }
}

export async function unpin(backend: CacheBackend, name: string): Promise<void> {
  const key = pinKey(name);
  if (!(await backend.exists(key))) {
    throw new CachectlError(
      'PIN_NOT_FOUND',
      `there is no pin ${JSON.stringify(name)} in ${backend.displayUrl}; cachectl pins lists them`,
    );
  }
  await backend.delete([key]);
}

export interface PinListing {
  name: string;
  paths: string[];
  problems: string[];
}

export async function listPins(backend: CacheBackend): Promise<PinListing[]> {
  const pins: PinListing[] = [];
  for await (const page of backend.list(PINS_PREFIX)) {
    for (const entry of page) {
      const text = (await backend.get(entry.key))?.toString('utf8');
      if (text === undefined) continue;
      const { paths, problems } = parsePin(text, entry.key);
      pins.push({ name: entry.key.slice(PINS_PREFIX.length), paths, problems });
    }
  }
  return pins;
}
