import { type Config, requiredCacheUrl } from '../core/config.js';
import { openCache } from '../cache/open.js';
import { LeaseWriter } from '../gc/lease.js';
import { LocalStore } from '../nix/local-store.js';
import { resolveArguments } from '../nix/resolve.js';
import { loadSecretKeys } from '../upload/secret-keys.js';
import { pushClosures, type PushProgress, type PushResult } from '../upload/push.js';

export interface PushCommandResult extends PushResult {
  cache: string;
  seconds: number;
}

/** `cachectl push PATH…`: uploads the closures of PATHs now, in the foreground. */
export async function pushCommand(
  args: readonly string[],
  config: Config,
  progress: PushProgress,
): Promise<PushCommandResult> {
  const cacheUrl = requiredCacheUrl(config);
  const started = Date.now();
  // Everything is checked before the first byte goes out: keys, paths, then the cache itself.
  const keys = await loadSecretKeys(config.secretKeyFiles);
  const store = new LocalStore({ dbPath: config.nixDb, logDir: config.nixLogDir });
  const backend = await openCache(cacheUrl);
  const lease = new LeaseWriter(backend);
  try {
    const roots = await resolveArguments(args, store);
    const result = await pushClosures(roots, {
      backend,
      store,
      compression: config.compression,
      narListing: config.narListing,
      keys,
      jobs: config.jobs,
      skipSignedBy: config.skipSignedBy,
      progress,
      lease,
    });
    return { ...result, cache: backend.displayUrl, seconds: (Date.now() - started) / 1000 };
  } finally {
    lease.close();
    backend.close();
    store.close();
  }
}
