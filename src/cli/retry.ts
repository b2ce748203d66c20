import { CachectlError } from '../core/errors.js';
import type { Config } from '../core/config.js';
import { DEFAULT_STORE_DIR } from '../core/store-path.js';
import { resolveStorePath } from '../nix/resolve.js';
import { Queue } from '../queue/queue.js';

/**
 * `cachectl retry [--all | PATH…]`: failed paths back to pending with fresh tries. A named path may be gone
 * from the local store (that may be why it failed): store paths are taken as written, never looked up.
 */
export async function retryCommand(args: readonly string[], all: boolean, config: Config): Promise<string[]> {
  if (all === args.length > 0) {
    throw new CachectlError('CONFIG_INVALID', 'name the failed paths to retry, or pass --all (not both)');
  }
  const paths: string[] = [];
  for (const arg of args) paths.push(await resolveStorePath(arg, DEFAULT_STORE_DIR));
  const queue = Queue.openExisting(config.queue);
  try {
    const retried = queue.paths.retry(all ? undefined : paths);
    const notFailed = paths.filter((path) => !retried.includes(path));
    if (notFailed.length > 0) {
      const states = queue.paths.statesOf(notFailed);
      const described = notFailed.map((path) => `${path} (${states.get(path) ?? 'not in the queue'})`);
      throw new CachectlError(
        'PATH_NOT_QUEUED',
        `not failed, so not retried: ` +
          `${described.join(', ')}${retried.length > 0 ? `; retried the other ${retried.length}` : ''}`,
      );
    }
    return retried;
  } finally {
    queue.close();
  }
}
