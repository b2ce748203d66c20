import { CachectlError } from '../core/errors.js';
import type { Config } from '../core/config.js';
import { addGcRoots } from '../nix/gc-roots.js';
import { LocalStore } from '../nix/local-store.js';
import { resolveArguments } from '../nix/resolve.js';
import { Queue } from '../queue/queue.js';

/** `cachectl enqueue PATH…`: what the hook does, for scripts and people. Returns the store paths queued. */
export async function enqueueCommand(args: readonly string[], config: Config): Promise<string[]> {
  const store = new LocalStore({ dbPath: config.nixDb, logDir: config.nixLogDir });
  try {
    const paths = await resolveArguments(args, store);
    const valid = store.queryPathInfos(paths);
    const invalid = paths.filter((path) => !valid.has(path));
    if (invalid.length > 0) {
      throw new CachectlError(
        'PATH_NOT_VALID',
        `${invalid.join(', ')} ${invalid.length === 1 ? 'is' : 'are'} not valid in the local Nix store; build or ` +
          `substitute first`,
      );
    }
    // Rooted before queued: the daemon removes the root once uploaded, so the other order could leave one behind.
    addGcRoots(config.gcRoots, paths);
    const queue = Queue.open(config.queue);
    try {
      queue.paths.enqueue(paths, 'cli');
    } finally {
      queue.close();
    }
    return paths;
  } finally {
    store.close();
  }
}
