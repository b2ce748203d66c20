/**
 * The Grafana dashboard shipped as monitoring/grafana-dashboard.json, written from this description by
 * `npm run docs` (the layout and the JSON model's boilerplate are the program's, the queries are here).
 * test/monitoring.test.ts has a real Prometheus run every query against a real daemon.
 */

/** A query of a panel; Grafana fills in $job, $instance and $__rate_interval. */
interface Query {
  expr: string;
  legend: string;
}

interface Panel {
  title: string;
  description: string;
  kind: 'timeseries' | 'stat';
  unit: string;
  queries: Query[];
  /** width in Grafana's 24 columns */
  width?: number;
  /** stacked areas (a timeseries whose series add up) */
  stacked?: boolean;
  /** a stat that shows the series' names (the legend) instead of their values */
  showNames?: boolean;
  /** stat thresholds: [value, colour] from the lowest up, the first value ignored */
  thresholds?: [number, string][];
}

/** Stat colours: red at 0 and green from 1 (something up, a run that worked), or the other way round. */
const ONE_IS_GOOD: [number, string][] = [
  [0, 'red'],
  [1, 'green'],
];
const ZERO_IS_GOOD: [number, string][] = [
  [0, 'green'],
  [1, 'red'],
];

/** Grafana's label matchers for the dashboard's variables. */
const ON = 'job=~"$job", instance=~"$instance"';

const ROWS: { title: string; panels: Panel[] }[] = [
  {
    title: 'Queue',
    panels: [
      {
        title: 'Daemon',
        description: 'The state of each daemon now (paused: the cache or the machine is in trouble).',
        kind: 'stat',
        unit: 'none',
        showNames: true,
        width: 6,
        queries: [{ expr: `cachectl_daemon_state{${ON}} == 1`, legend: '{{instance}}: {{state}}' }],
      },
      {
        title: 'Scraped',
        description: 'Whether Prometheus reaches each daemon (0: down, see the CachectlDaemonDown alert).',
        kind: 'stat',
        unit: 'none',
        width: 6,
        thresholds: ONE_IS_GOOD,
        queries: [{ expr: `up{${ON}}`, legend: '{{instance}}' }],
      },
      {
        title: 'Failed paths',
        description: 'Paths that used up their tries: cachectl status names them, cachectl retry queues them again.',
        kind: 'stat',
        unit: 'none',
        width: 6,
        thresholds: ZERO_IS_GOOD,
        queries: [{ expr: `sum(cachectl_queue_paths{${ON}, state="failed"})`, legend: 'failed' }],
      },
      {
        title: 'Spool files',
        description: 'Files the hook wrote when it could not use the queue, not yet taken in by the daemon.',
        kind: 'stat',
        unit: 'none',
        width: 6,
        thresholds: [
          [0, 'green'],
          [1, 'orange'],
        ],
        queries: [{ expr: `sum(cachectl_spool_files{${ON}})`, legend: 'spool files' }],
      },
      {
        title: 'Queue depth',
        description: 'Paths not yet in the cache, by state (inbox: queued by hooks, not yet taken in).',
        kind: 'timeseries',
        unit: 'none',
        stacked: true,
        width: 12,
        queries: [
          {
            expr: `sum by (state) (cachectl_queue_paths{${ON}, state=~"inbox|pending|uploading|failed"})`,
            legend: '{{state}}',
          },
        ],
      },
      {
        title: 'Oldest pending',
        description: 'How long the oldest path not yet uploaded has waited (the CachectlQueueStuck alert: an hour).',
        kind: 'timeseries',
        unit: 's',
        width: 12,
        queries: [{ expr: `max by (instance) (cachectl_oldest_pending_seconds{${ON}})`, legend: '{{instance}}' }],
      },
    ],
  },
  {
    title: 'Uploads',
    panels: [
      {
        title: 'Paths uploaded',
        description: 'Store paths uploaded per second (closures included).',
        kind: 'timeseries',
        unit: 'ops',
        queries: [
          {
            expr: `sum by (instance) (rate(cachectl_uploaded_paths_total{${ON}}[$__rate_interval]))`,
            legend: '{{instance}}',
          },
        ],
      },
      {
        title: 'Bytes uploaded',
        description: 'NAR bytes (before compression) and the compressed bytes sent, per second.',
        kind: 'timeseries',
        unit: 'Bps',
        queries: [
          {
            expr: `sum(rate(cachectl_uploaded_nar_bytes_total{${ON}}[$__rate_interval]))`,
            legend: 'NAR',
          },
          {
            expr: `sum(rate(cachectl_uploaded_file_bytes_total{${ON}}[$__rate_interval]))`,
            legend: 'compressed',
          },
        ],
      },
      {
        title: 'Batch upload time',
        description: 'Time to upload one claimed batch of closures: median and 95th percentile.',
        kind: 'timeseries',
        unit: 's',
        queries: [0.5, 0.95].map((q) => ({
          expr:
            `histogram_quantile(${q}, sum by (le) ` +
            `(rate(cachectl_upload_duration_seconds_bucket{${ON}}[$__rate_interval])))`,
          legend: `p${q * 100}`,
        })),
      },
      {
        title: 'Uploads at once',
        description: 'NARs each daemon uploads at once (halved while the cache throttles).',
        kind: 'timeseries',
        unit: 'none',
        queries: [{ expr: `max by (instance) (cachectl_daemon_jobs{${ON}})`, legend: '{{instance}}' }],
      },
    ],
  },
  {
    title: 'Trouble',
    panels: [
      {
        title: 'Failures by code',
        description: 'Failed upload attempts per second, by error code (docs/errors.md explains each).',
        kind: 'timeseries',
        unit: 'ops',
        stacked: true,
        queries: [
          {
            expr: `sum by (code) (rate(cachectl_upload_failures_total{${ON}}[$__rate_interval]))`,
            legend: '{{code}}',
          },
        ],
      },
      {
        title: 'Retries',
        description: 'Failed attempts whose path went back to pending for another try, per second.',
        kind: 'timeseries',
        unit: 'ops',
        queries: [
          {
            expr: `sum by (instance) (rate(cachectl_upload_retries_total{${ON}}[$__rate_interval]))`,
            legend: '{{instance}}',
          },
        ],
      },
      {
        title: 'Pauses',
        description:
          'Pauses for trouble of the cache or of the machine, by error code, and the daemons paused now ' +
          '(the CachectlPaused alert: 15 minutes).',
        kind: 'timeseries',
        unit: 'none',
        queries: [
          {
            expr: `sum by (code) (increase(cachectl_daemon_pauses_total{${ON}}[$__rate_interval]))`,
            legend: 'pauses: {{code}}',
          },
          { expr: `sum(cachectl_daemon_state{${ON}, state="paused"})`, legend: 'paused now' },
        ],
      },
    ],
  },
  {
    title: 'Garbage collection',
    panels: [
      {
        title: 'Since the last GC run',
        description: 'Time since the last cachectl gc on each machine finished.',
        kind: 'stat',
        unit: 's',
        width: 6,
        queries: [
          {
            expr: `time() - max by (instance) (cachectl_gc_last_run_timestamp_seconds{${ON}})`,
            legend: '{{instance}}',
          },
        ],
      },
      {
        title: 'Last GC run',
        description: '1: the last run finished its work; 0: it failed or stopped early (cachectl status says why).',
        kind: 'stat',
        unit: 'none',
        width: 6,
        thresholds: ONE_IS_GOOD,
        queries: [{ expr: `min by (instance) (cachectl_gc_last_run_success{${ON}})`, legend: '{{instance}}' }],
      },
      {
        title: 'GC runs',
        description: 'Runs of cachectl gc finished in each interval.',
        kind: 'timeseries',
        unit: 'none',
        width: 12,
        queries: [
          {
            expr: `sum(changes(cachectl_gc_last_run_timestamp_seconds{${ON}}[$__rate_interval]))`,
            legend: 'runs',
          },
        ],
      },
      {
        title: 'Bytes deleted by the last GC run',
        description: 'Bytes the last run deleted (would have, for a dry run).',
        kind: 'timeseries',
        unit: 'bytes',
        queries: [{ expr: `max by (instance) (cachectl_gc_last_run_deleted_bytes{${ON}})`, legend: '{{instance}}' }],
      },
      {
        title: 'Objects deleted by the last GC run',
        description: 'Objects the last run deleted (would have, for a dry run).',
        kind: 'timeseries',
        unit: 'none',
        queries: [{ expr: `max by (instance) (cachectl_gc_last_run_deleted_objects{${ON}})`, legend: '{{instance}}' }],
      },
      {
        title: 'Last GC run took',
        description: 'How long the last run took.',
        kind: 'timeseries',
        unit: 's',
        queries: [{ expr: `max by (instance) (cachectl_gc_last_run_duration_seconds{${ON}})`, legend: '{{instance}}' }],
      },
    ],
  },
  {
    title: 'Process',
    panels: [
      {
        title: 'Memory',
        description: 'Resident memory of the daemon and its JavaScript heap in use.',
        kind: 'timeseries',
        unit: 'bytes',
        width: 6,
        queries: [
          { expr: `process_resident_memory_bytes{${ON}}`, legend: 'resident {{instance}}' },
          { expr: `nodejs_heap_size_used_bytes{${ON}}`, legend: 'heap {{instance}}' },
        ],
      },
      {
        title: 'CPU',
        description: 'CPU seconds per second (1 = one core), compression included.',
        kind: 'timeseries',
        unit: 'none',
        width: 6,
        queries: [{ expr: `rate(process_cpu_seconds_total{${ON}}[$__rate_interval])`, legend: '{{instance}}' }],
      },
      {
        title: 'Event-loop lag',
        description: 'How late the event loop runs, 99th percentile: high while something blocks it.',
        kind: 'timeseries',
        unit: 's',
        width: 6,
        queries: [{ expr: `nodejs_eventloop_lag_p99_seconds{${ON}}`, legend: '{{instance}}' }],
      },
      {
        title: 'Garbage collection (Node)',
        description: "Seconds per second Node's garbage collector takes, by kind.",
        kind: 'timeseries',
        unit: 's',
        width: 6,
        queries: [
          {
            expr: `sum by (kind) (rate(nodejs_gc_duration_seconds_sum{${ON}}[$__rate_interval]))`,
            legend: '{{kind}}',
          },
        ],
      },
    ],
  },
];

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };
const PANEL_HEIGHT = 8;

/** The dashboard's JSON model (Grafana 10's schema), as the file holds it. */
export function dashboardJson(): string {
  let id = 0;
  let y = 0;
  const panels: object[] = [];
  for (const row of ROWS) {
    panels.push({ type: 'row', id: ++id, title: row.title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y } });
    y += 1;
    let x = 0;
    for (const panel of row.panels) {
      const w = panel.width ?? 8;
      if (x + w > 24) {
        x = 0;
        y += PANEL_HEIGHT;
      }
      panels.push(panelJson(panel, ++id, { h: PANEL_HEIGHT, w, x, y }));
      x += w;
    }
    y += PANEL_HEIGHT;
  }
  const variable = (name: string, label: string, query: string) => ({
    type: 'query',
    name,
    label,
    datasource: DATASOURCE,
    definition: query,
    query: { query, refId: name },
    refresh: 2,
    includeAll: true,
    multi: true,
    allValue: '.+',
    current: {},
    sort: 1,
  });
  const dashboard = {
    title: 'cachectl',
    uid: 'cachectl',
    description: 'The cachectl daemons: their queue, uploads, trouble and GC runs (from the cachectl package).',
    tags: ['cachectl', 'nix'],
    editable: true,
    graphTooltip: 1,
    refresh: '30s',
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-6h', to: 'now' },
    annotations: { list: [] },
    templating: {
      list: [
        { type: 'datasource', name: 'datasource', label: 'Prometheus', query: 'prometheus', current: {} },
        variable('job', 'Job', 'label_values(cachectl_daemon_state, job)'),
        variable('instance', 'Instance', 'label_values(cachectl_daemon_state{job=~"$job"}, instance)'),
      ],
    },
    panels,
  };
  return `${JSON.stringify(dashboard, null, 2)}\n`;
}

function panelJson(panel: Panel, id: number, gridPos: { h: number; w: number; x: number; y: number }): object {
  const steps = (panel.thresholds ?? [[0, 'green']]).map(([value, color], i) => ({
    color,
    value: i === 0 ? null : value,
  }));
  const options =
    panel.kind === 'stat'
      ? {
          reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
          colorMode: panel.showNames === true ? 'none' : 'value',
          graphMode: 'none',
          textMode: panel.showNames === true ? 'name' : 'value_and_name',
          justifyMode: 'auto',
          orientation: 'auto',
        }
      : {
          legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
          tooltip: { mode: 'multi', sort: 'desc' },
        };
  const custom =
    panel.kind === 'timeseries'
      ? {
          custom: {
            fillOpacity: panel.stacked === true ? 30 : 0,
            stacking: { mode: panel.stacked === true ? 'normal' : 'none' },
          },
        }
      : {};
  return {
    type: panel.kind,
    id,
    title: panel.title,
    description: panel.description,
    datasource: DATASOURCE,
    gridPos,
    fieldConfig: {
      defaults: { unit: panel.unit, thresholds: { mode: 'absolute', steps }, ...custom },
      overrides: [],
    },
    options,
    targets: panel.queries.map((query, i) => ({
      refId: String.fromCharCode(65 + i),
      datasource: DATASOURCE,
      expr: query.expr,
      legendFormat: query.legend,
      range: panel.kind === 'timeseries',
      instant: panel.kind === 'stat',
    })),
  };
}
