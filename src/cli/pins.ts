import { type Config, requiredCacheUrl } from '../core/config.js';
import { DEFAULT_STORE_DIR } from '../core/store-path.js';
import type { CacheBackend } from '../cache/backend.js';
import { openCache } from '../cache/open.js';
import { listPins, pin, unpin, type PinListing } from '../gc/pins.js';
import { resolveStorePath } from '../nix/resolve.js';

async function withCache<T>(config: Config, work: (backend: CacheBackend) => Promise<T>): Promise<T> {
  const cacheUrl = requiredCacheUrl(config);
  const backend = await openCache(cacheUrl, { headers: config.objectHeaders });
  try {
    return await work(backend);
  } finally {
    await backend.close();
  }
}

/** `cachectl pin NAME PATH…`: store paths (they need not be in the local store) or links to them. */
export async function pinCommand(name: string, paths: readonly string[], config: Config): Promise<string[]> {
  const storePaths: string[] = [];
  for (const path of paths) storePaths.push(await resolveStorePath(path, DEFAULT_STORE_DIR));
  return withCache(config, async (backend) => {
    await pin(backend, name, storePaths);
    return storePaths;
  });
}

export function unpinCommand(name: string, config: Config): Promise<void> {
  return withCache(config, (backend) => unpin(backend, name));
}

export function pinsCommand(config: Config): Promise<PinListing[]> {
  return withCache(config, (backend) => listPins(backend));
}
