import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ListenAddress } from '../core/config.js';
import { errorText } from '../core/errors.js';
import { DAEMON_STATES, type DaemonStatus } from '../queue/daemon-record.js';
import type { GcRun } from '../queue/gc-runs.js';
import type { StatusReport } from '../queue/status-report.js';

/** Upper bounds (seconds) of the upload duration histogram's buckets. */
const UPLOAD_SECONDS_BOUNDS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

/** How long each claimed batch of closures took to upload: observed by the daemon as batches end. */
export function uploadDurationHistogram(): Histogram {
  return new Histogram({
    name: 'cachectl_upload_duration_seconds',
    help: 'Time to upload one claimed batch of closures.',
    buckets: UPLOAD_SECONDS_BOUNDS,
    registers: [],
  });
}

/** What the daemon knows beyond the queue: its counters since it started. */
export interface DaemonMetrics {
  status: DaemonStatus;
  /** failed upload attempts of root paths, by error code */
  failuresByCode: ReadonlyMap<string, number>;
  /** times the uploader paused for trouble of the cache or this machine, by error code */
  pausesByCode: ReadonlyMap<string, number>;
}

/** What one scrape shows: the queue as it is now and the daemon's counters. */
interface Snapshot {
  report: StatusReport;
  daemon: DaemonMetrics;
}

type Labels = Record<string, string>;

/**
 * The daemon's Prometheus registry: the queue, the daemon and the last GC run, read once per scrape, and
 * prom-client's default process and Node metrics (memory, CPU, event-loop lag, garbage collection).
 */
export class MetricsRegistry {
  private readonly registry = new Registry();
  /** the GC gauges: exported only once a GC run is on record (a 0 would read as a failed run) */
  private readonly gcGauges: { name: string; gauge: Gauge }[];
  /** what the scrape under way reads: its collect functions all run before the scrape's first await */
  private snapshot: Snapshot | undefined;

  /** each batch's upload time: the daemon observes it as batches end */
  readonly uploadSeconds = uploadDurationHistogram();

  /** `read` is called once per scrape. */
  constructor(private readonly read: () => Snapshot) {
    collectDefaultMetrics({ register: this.registry });
    type Samples = (now: Snapshot) => [Labels, number][];
    const snapshotOf = (): Snapshot => this.current();
    const config = (name: string, help: string, labelNames: string[]) => ({ name, help, labelNames, registers: [] });
    const gauge = (name: string, help: string, samples: Samples, labelNames: string[] = []): Gauge =>
      new Gauge({
        ...config(name, help, labelNames),
        collect() {
          this.reset();
          for (const [labels, value] of samples(snapshotOf())) this.set(labels, value);
        },
      });
    // Counters the daemon keeps itself (for status too): each scrape sets them to its numbers.
    const counter = (name: string, help: string, samples: Samples, labelNames: string[] = []): Counter =>
      new Counter({
        ...config(name, help, labelNames),
        collect() {
          this.reset();
          for (const [labels, value] of samples(snapshotOf())) this.inc(labels, value);
        },
      });
    const gcGauge = (name: string, help: string, value: (gc: GcRun) => number): { name: string; gauge: Gauge } => ({
      name,
      gauge: gauge(name, help, ({ report }) => (report.lastGc === null ? [] : [[{}, value(report.lastGc)]])),
    });
    const byCode = (counts: ReadonlyMap<string, number>): [Labels, number][] =>
      [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([code, n]) => [{ code }, n]);

    const metrics = [
      gauge(
        'cachectl_queue_paths',
        'Paths in the queue by state (inbox: queued by hooks, not yet taken in by the daemon).',
        ({ report }) =>
          (['inbox', 'pending', 'uploading', 'done', 'failed'] as const).map((state) => [
            { state },
            report.counts[state],
          ]),
        ['state'],
      ),
      gauge(
        'cachectl_spool_files',
        'Spool files the hook wrote when it could not use the queue, not yet taken in.',
        ({ report }) => [[{}, report.counts.spoolFiles]],
      ),
      gauge(
        'cachectl_oldest_pending_seconds',
        'How long the oldest path not yet uploaded has waited (0 when none waits).',
        ({ report }) => [[{}, report.oldestPendingSeconds ?? 0]],
      ),
      gauge(
        'cachectl_daemon_state',
        'The state of the daemon: 1 for the current one.',
        ({ daemon }) => DAEMON_STATES.map((state) => [{ state }, state === daemon.status.state ? 1 : 0]),
        ['state'],
      ),
      gauge(
        'cachectl_daemon_jobs',
        'NARs the daemon uploads at once now (halved while the cache throttles).',
        ({ daemon }) => [[{}, daemon.status.jobs]],
      ),
      counter(
        'cachectl_uploaded_paths_total',
        'Store paths uploaded by this daemon since it started (closures included).',
        ({ daemon }) => [[{}, daemon.status.uploadedPaths]],
      ),
      counter(
        'cachectl_uploaded_nar_bytes_total',
        'NAR bytes uploaded since the daemon started (before compression).',
        ({ daemon }) => [[{}, daemon.status.uploadedNarBytes]],
      ),
      counter(
        'cachectl_uploaded_file_bytes_total',
        'Bytes of compressed NARs uploaded since the daemon started.',
        ({ daemon }) => [[{}, daemon.status.uploadedFileBytes]],
      ),
      counter(
        'cachectl_upload_failures_total',
        'Failed upload attempts of queued paths since the daemon started, by error code.',
        ({ daemon }) => byCode(daemon.failuresByCode),
        ['code'],
      ),
      counter(
        'cachectl_upload_retries_total',
        'Failed attempts whose path went back to pending for another try.',
        ({ daemon }) => [[{}, daemon.status.retries]],
      ),
      counter(
        'cachectl_daemon_pauses_total',
        'Times the uploader paused for trouble of the cache or of this machine, by error code.',
        ({ daemon }) => byCode(daemon.pausesByCode),
        ['code'],
      ),
    ];
    this.gcGauges = [
      gcGauge(
        'cachectl_gc_last_run_timestamp_seconds',
        'When the last cachectl gc run on this machine finished.',
        (gc) => gc.finishedAt / 1000,
      ),
      gcGauge(
        'cachectl_gc_last_run_success',
        '1 when the last GC run finished its work, 0 when it failed or stopped early.',
        (gc) => (gc.ok ? 1 : 0),
      ),
      gcGauge('cachectl_gc_last_run_duration_seconds', 'How long the last GC run took.', (gc) => gc.seconds),
      gcGauge(
        'cachectl_gc_last_run_deleted_objects',
        'Objects the last GC run deleted (would have, for a dry run).',
        (gc) => gc.deletedObjects,
      ),
      gcGauge(
        'cachectl_gc_last_run_deleted_bytes',
        'Bytes the last GC run deleted (would have, for a dry run).',
        (gc) => gc.deletedBytes,
      ),
    ];
    for (const metric of [...metrics, this.uploadSeconds]) this.registry.registerMetric(metric);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text format (version 0.0.4) of everything, read now. */
  async render(): Promise<string> {
    this.snapshot = this.read();
    for (const { name, gauge } of this.gcGauges) {
      if (this.snapshot.report.lastGc === null) this.registry.removeSingleMetric(name);
      else this.registry.registerMetric(gauge);
    }
    return this.registry.metrics();
  }

  private current(): Snapshot {
    if (this.snapshot === undefined) throw new Error('the metrics are read through render() only');
    return this.snapshot;
  }
}

/**
 * Whether the daemon is doing its job: uploading or ready to; not while starting, paused by cache or machine
 * trouble, or draining.
 */
export function health(status: DaemonStatus): { ok: boolean; text: string } {
  const ok = status.state === 'idle' || status.state === 'uploading';
  const reason = status.state === 'paused' && status.pauseReason !== undefined ? `: ${status.pauseReason}` : '';
  return {
    ok,
    text: `${status.state}${reason}\n`,
  };
}

/**
 * Serves `GET /metrics` and `GET /healthz` on `address`. Resolves once listening, with the address bound
 * (port 0 picks a free one).
 */
export async function serveMetrics(
  address: ListenAddress,
  metrics: MetricsRegistry,
  healthOf: () => { ok: boolean; text: string },
): Promise<{ server: Server; bound: AddressInfo }> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { Allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      metrics.render().then(
        (text) => response.writeHead(200, { 'Content-Type': metrics.contentType }).end(text),
        (err: unknown) =>
          response
            .writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' })
            .end(`cannot read the queue: ${errorText(err)}\n`),
      );
    } else if (path === '/healthz') {
      const { ok, text } = healthOf();
      response.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8' }).end(text);
    } else {
      response
        .writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' })
        .end('cachectl serves /metrics and /healthz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      resolve();
    });
  });
  server.unref();
  return { server, bound: server.address() as AddressInfo };
}
