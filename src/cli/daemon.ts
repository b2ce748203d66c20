import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CachectlError, errorText } from '../core/errors.js';
import { type Config, type ListenAddress, requiredCacheUrl } from '../core/config.js';
import { openCache } from '../cache/open.js';
import { Daemon } from '../daemon/daemon.js';
import type { UploadTimes } from '../daemon/counters.js';
import type { MetricsRegistry } from '../daemon/metrics.js';
import { systemdNotifier } from '../daemon/notify.js';
import { LocalStore } from '../nix/local-store.js';
import { Queue } from '../queue/queue.js';
import { spoolDirOf } from '../queue/spool.js';
import { openSigner } from '../upload/signer.js';
import { statusOf } from '../queue/status-report.js';

/**
 * `cachectl daemon`: everything the uploader needs, checked before it starts, and the metrics endpoint when
 * asked for. `abandon` stops the uploads in flight and every request to the cache (the drain time is up).
 * `close()` releases it all.
 */
export async function openDaemon(
  config: Config,
  log: Logger,
  env: Readonly<Record<string, string | undefined>>,
  abandon: AbortSignal,
): Promise<{ daemon: Daemon; close: () => Promise<void> }> {
  const cacheUrl = requiredCacheUrl(config);
  const signer = await openSigner(config);
  const store = new LocalStore({ dbPath: config.nixDb, logDir: config.nixLogDir });
  const queue = Queue.open(config.queue);
  const backend = await openCache(cacheUrl, { signal: abandon, headers: config.objectHeaders });
  const notifier = systemdNotifier(env, (err) => {
    log.warn({ err }, 'cannot notify systemd');
  });
  const metrics: PreparedMetrics | undefined =
    config.metricsListen === undefined
      ? undefined
      : await prepareMetrics(config.metricsListen, () => ({ report: statusOf(queue), daemon: daemon.metrics() }));
  const daemon: Daemon = new Daemon({
    queue,
    spoolDir: spoolDirOf(config.queue),
    gcRootsDir: config.gcRoots,
    backend,
    store,
    signer,
    compression: config.compression,
    narListing: config.narListing,
    jobs: config.jobs,
    skipSignedBy: config.skipSignedBy,
    log,
    notifier,
    env,
    signal: abandon,
    uploadTimes: metrics?.uploadTimes,
  });
  const served = await metrics?.serve(daemon);
  if (served !== undefined)
    log.info({ metrics: `http://${formatHost(served.bound.address)}:${served.bound.port}/metrics` }, 'serving metrics');
  return {
    daemon,
    async close() {
      served?.server.close();
      notifier?.close();
      signer.close();
      queue.close();
      store.close();
      await backend.close();
    },
  };
}

interface PreparedMetrics {
  uploadTimes: UploadTimes;
  serve(daemon: Daemon): Promise<{ server: Server; bound: AddressInfo }>;
}

/**
 * The metrics endpoint: its registry made before the daemon (whose batches it times), served once the daemon
 * exists. prom-client is loaded only here, so a daemon without metrics does not load it at start.
 */
async function prepareMetrics(
  address: ListenAddress,
  read: ConstructorParameters<typeof MetricsRegistry>[0],
): Promise<PreparedMetrics> {
  const { health, MetricsRegistry, serveMetrics } = await import('../daemon/metrics.js');
  const registry = new MetricsRegistry(read);
  return {
    uploadTimes: registry.uploadSeconds,
    async serve(daemon) {
      try {
        return await serveMetrics(address, registry, () => health(daemon.metrics().status));
      } catch (err) {
        throw new CachectlError(
          'CONFIG_INVALID',
          `cannot serve metrics on ${formatHost(address.host)}:${address.port}: ${errorText(err)}; pick another ` +
            `--metrics-listen address`,
        );
      }
    },
  };
}

const formatHost = (host: string): string => (host.includes(':') ? `[${host}]` : host);
