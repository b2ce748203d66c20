import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ListenAddress } from '../core/config.js';
import { DAEMON_STATES, type DaemonStatus } from '../queue/daemon-record.js';
import type { StatusReport } from '../queue/status-report.js';

/** Upper bounds (seconds) of the upload duration histogram's buckets. */
const UPLOAD_SECONDS_BOUNDS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

/** A Prometheus histogram: cumulative counts per upper bound, sum and count. */
export class Histogram {
  readonly bounds: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[] = UPLOAD_SECONDS_BOUNDS) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count += 1;
    this.bounds.forEach((bound, i) => {
      if (value <= bound) this.counts[i] = (this.counts[i] ?? 0) + 1;
    });
  }
}

/** What the daemon knows beyond the queue: its counters since it started. */
export interface DaemonMetrics {
  status: DaemonStatus;
  /** failed upload attempts of root paths, by error code */
  failuresByCode: ReadonlyMap<string, number>;
  /** how long each claimed batch of closures took to upload */
  uploadSeconds: Histogram;
}

/** The Prometheus text format (version 0.0.4) of the queue, the daemon and the last GC run. */
export function renderMetrics(report: StatusReport, daemon: DaemonMetrics): string {
  const out: string[] = [];
  const metric = (
    name: string,
    type: 'gauge' | 'counter' | 'histogram',
    help: string,
    samples: [string, number][],
  ): void => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) out.push(`${name}${labels} ${formatValue(value)}`);
  };
  const { counts } = report;
  metric(
    'cachectl_queue_paths',
    'gauge',
    'Paths in the queue by state (inbox: queued by hooks, not yet taken in by the daemon).',
    (['inbox', 'pending', 'uploading', 'done', 'failed'] as const).map((state) => [
      `{state="${state}"}`,
      counts[state],
    ]),
  );
  metric(
    'cachectl_spool_files',
    'gauge',
    'Spool files the hook wrote when it could not use the queue, not yet taken in.',
    [['', counts.spoolFiles]],
  );
  metric(
    'cachectl_oldest_pending_seconds',
    'gauge',
    'How long the oldest path not yet uploaded has waited (0 when none waits).',
    [['', report.oldestPendingSeconds ?? 0]],
  );

  const { status } = daemon;
  metric(
    'cachectl_daemon_state',
    'gauge',
    'The state of the daemon: 1 for the current one.',
    DAEMON_STATES.map((state) => [`{state="${state}"}`, state === status.state ? 1 : 0]),
  );
  metric('cachectl_daemon_jobs', 'gauge', 'NARs the daemon uploads at once now (halved while the cache throttles).', [
    ['', status.jobs],
  ]);
  metric(
    'cachectl_uploaded_paths_total',
    'counter',
    'Store paths uploaded by this daemon since it started (closures included).',
    [['', status.uploadedPaths]],
  );
  metric(
    'cachectl_uploaded_nar_bytes_total',
    'counter',
    'NAR bytes uploaded since the daemon started (before compression).',
    [['', status.uploadedNarBytes]],
  );
  metric(
    'cachectl_uploaded_file_bytes_total',
    'counter',
    'Bytes of compressed NARs uploaded since the daemon started.',
    [['', status.uploadedFileBytes]],
  );
  metric(
    'cachectl_upload_failures_total',
    'counter',
    'Failed upload attempts of queued paths since the daemon started, by error code.',
    [...daemon.failuresByCode].sort(([a], [b]) => a.localeCompare(b)).map(([code, n]) => [`{code="${code}"}`, n]),
  );
  metric(
    'cachectl_upload_retries_total',
    'counter',
    'Failed attempts whose path went back to pending for another try.',
    [['', status.retries]],
  );

  const { uploadSeconds } = daemon;
  out.push(
    '# HELP cachectl_upload_duration_seconds Time to upload one claimed batch of closures.',
    '# TYPE cachectl_upload_duration_seconds histogram',
  );
  uploadSeconds.bounds.forEach((bound, i) =>
    out.push(`cachectl_upload_duration_seconds_bucket{le="${bound}"} ${uploadSeconds.counts[i] ?? 0}`),
  );
  out.push(
    `cachectl_upload_duration_seconds_bucket{le="+Inf"} ${uploadSeconds.count}`,
    `cachectl_upload_duration_seconds_sum ${formatValue(uploadSeconds.sum)}`,
    `cachectl_upload_duration_seconds_count ${uploadSeconds.count}`,
  );

  const gc = report.lastGc;
  if (gc !== null) {
    metric(
      'cachectl_gc_last_run_timestamp_seconds',
      'gauge',
      'When the last cachectl gc run on this machine finished.',
      [['', gc.finishedAt / 1000]],
    );
    metric(
      'cachectl_gc_last_run_success',
      'gauge',
      '1 when the last GC run finished its work, 0 when it failed or stopped early.',
      [['', gc.ok ? 1 : 0]],
    );
    metric('cachectl_gc_last_run_duration_seconds', 'gauge', 'How long the last GC run took.', [['', gc.seconds]]);
    metric(
      'cachectl_gc_last_run_deleted_objects',
      'gauge',
      'Objects the last GC run deleted (would have, for a dry run).',
      [['', gc.deletedObjects]],
    );
    metric(
      'cachectl_gc_last_run_deleted_bytes',
      'gauge',
      'Bytes the last GC run deleted (would have, for a dry run).',
      [['', gc.deletedBytes]],
    );
  }
  return `${out.join('\n')}\n`;
}

function formatValue(value: number): string {
  // at most 6 decimals, never an exponent
  return String(Number(value.toFixed(6)));
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
  render: () => string,
  healthOf: () => { ok: boolean; text: string },
): Promise<{ server: Server; bound: AddressInfo }> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { Allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      try {
        response.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' }).end(render());
      } catch (err) {
        response
          .writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' })
          .end(`cannot read the queue: ${(err as Error).message}\n`);
      }
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
