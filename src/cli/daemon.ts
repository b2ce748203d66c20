import type { Logger } from 'pino';
import { errorText } from '../core/errors.js';
import { type Config, requiredCacheUrl } from '../core/config.js';
import { openCache } from '../cache/open.js';
import { Daemon } from '../daemon/daemon.js';
import { systemdNotifier } from '../daemon/notify.js';
import { LocalStore } from '../nix/local-store.js';
import { Queue } from '../queue/queue.js';
import { spoolDirOf } from '../queue/spool.js';
import { loadSecretKeys } from '../upload/secret-keys.js';

/** `cachectl daemon`: everything the uploader needs, checked before it starts. `close()` releases it all. */
export async function openDaemon(
  config: Config,
  log: Logger,
  env: Readonly<Record<string, string | undefined>>,
): Promise<{ daemon: Daemon; close: () => void }> {
  const cacheUrl = requiredCacheUrl(config);
  const keys = await loadSecretKeys(config.secretKeyFiles);
  const store = new LocalStore();
  const queue = Queue.open(config.queue);
  const backend = await openCache(cacheUrl);
  const notifier = systemdNotifier(env, (err) => log.warn({ err: errorText(err) }, 'cannot notify systemd (is systemd-notify installed?)'));
  const daemon = new Daemon({
    queue,
    spoolDir: spoolDirOf(config.queue),
    gcRootsDir: config.gcRoots,
    backend,
    store,
    keys,
    compression: config.compression,
    jobs: config.jobs,
    log,
    notifier,
    env,
  });
  return {
    daemon,
    close() {
      backend.close();
      queue.close();
      store.close();
    },
  };
}
