/**
 * The shipped dashboard and alert rules against the real thing: a real Prometheus (Debian's) scrapes a real
 * daemon and loads monitoring/prometheus-alerts.yml; every query of monitoring/grafana-dashboard.json and every
 * rule must parse there, name only metrics the daemon exports, and show data where the daemon has some.
 * promtool checks the rules file and runs the alerts' unit tests (test/monitoring/alerts.test.yml).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { HOOK, queueEnv, startDaemon, waitFor } from './helpers/daemon.js';
import { familyOf, parseExposition } from './helpers/metrics.js';
import {
  buildFixtures,
  cachectl,
  execFileAsync,
  newKey,
  REPO,
  requireNix,
  run,
  stopWhenDone,
  tempDir,
  type Key,
  withNix,
} from './helpers/nix.js';

const DASHBOARD = join(REPO, 'monitoring/grafana-dashboard.json');
const ALERTS = join(REPO, 'monitoring/prometheus-alerts.yml');
const ALERT_TESTS = join(REPO, 'test/monitoring/alerts.test.yml');
/** The alerts the rules file defines, by name: each must load, and have a unit test. */
const ALERT_NAMES = [...readFileSync(ALERTS, 'utf8').matchAll(/^\s+- alert: (\w+)$/gm)].map((match) => match[1] ?? '');

/** What Prometheus makes itself for every target: the rules' test for a dead daemon reads it. */
const PROMETHEUS_OWN = new Set(['up']);

const PROMQL_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset']);
const PROMQL_KEYWORDS_BINARY = new Set(['and', 'or', 'unless']);

/**
 * The metric names a PromQL expression selects: identifiers that are not functions, aggregations, keywords,
 * label names (in braces or in by/on/… lists) or parts of strings and ranges.
 */
function metricNames(expr: string): Set<string> {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const match of bare.matchAll(/(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])(?!\s*\()/g)) {
    const word = match[0];
    if (!PROMQL_KEYWORDS.has(word) && !PROMQL_KEYWORDS_BINARY.has(word)) names.add(word);
  }
  return names;
}

interface DashboardQuery {
  panel: string;
  expr: string;
}

/** Every query of the dashboard, as Prometheus receives it with the variables set to "All". */
function dashboardQueries(): DashboardQuery[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; type: string; query: unknown }[] };
  };
  const queries: DashboardQuery[] = dashboard.panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })),
  );
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue;
    // Grafana's label_values(SELECTOR, LABEL): Prometheus answers the selector.
    const text = (variable.query as { query: string }).query;
    const selector = /^label_values\((.+),\s*[a-zA-Z_]\w*\)$/.exec(text)?.[1];
    assert.ok(selector !== undefined, `variable ${variable.name}: ${text} is not label_values(SELECTOR, LABEL)`);
    queries.push({ panel: `variable ${variable.name}`, expr: selector });
  }
  return queries.map(({ panel, expr }) => ({
    panel,
    expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.+').replaceAll('$instance', '.+'),
  }));
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface PromResponse<T> {
  status: string;
  error?: string;
  data: T;
}

/** A real Prometheus scraping `target` under job="cachectl", with the shipped rules, evaluating each second. */
async function startPrometheus(target: string) {
  const dir = tempDir('prometheus');
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: [${JSON.stringify(ALERTS)}]`,
      'scrape_configs:',
      '  - job_name: cachectl',
      `    static_configs: [{ targets: [${JSON.stringify(target)}] }]`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const child = spawn(
    'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr.on('data', (data: Buffer) => (log += data.toString()));
  stopWhenDone(() => child.kill('SIGKILL'));
  const base = `http://127.0.0.1:${port}`;
  const api = async <T>(path: string): Promise<PromResponse<T>> => {
    const response = await fetch(`${base}/api/v1/${path}`);
    return (await response.json()) as PromResponse<T>;
  };
  const query = (expr: string) =>
    api<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(
      `query?query=${encodeURIComponent(expr)}`,
    );
  await waitFor(
    'Prometheus to answer',
    async () => ((await fetch(`${base}/-/ready`).catch(() => undefined))?.ok === true ? true : undefined),
    60_000,
    () => log,
  );
  return { api, query, log: () => log };
}

describe(withNix('monitoring: the Grafana dashboard and the Prometheus alert rules'), { concurrency: false }, () => {
  let key: Key;
  before(async () => {
    requireNix();
    for (const program of ['prometheus', 'promtool']) {
      const found = await run('sh', ['-c', `command -v ${program}`]);
      assert.equal(found.code, 0, `${program} is missing: run test/setup.sh (Debian's prometheus package)`);
    }
    key = await newKey('monitoring-1');
  });

  it('the rules file passes promtool check rules, and every alert fires in its unit test as it should', async () => {
    const check = await execFileAsync('promtool', ['check', 'rules', ALERTS]);
    const found = /SUCCESS: (\d+) rules found/.exec(check.stdout);
    assert.equal(Number(found?.[1]), ALERT_NAMES.length, check.stdout);
    const tested = await run('promtool', ['test', 'rules', ALERT_TESTS]);
    const testedAlerts = new Set(readFileSync(ALERT_TESTS, 'utf8').match(/(?<=alertname: )\w+/g));
    for (const alert of ALERT_NAMES) assert.ok(testedAlerts.has(alert), `${alert} has a unit test`);
    assert.equal(tested.code, 0, tested.stdout + tested.stderr);
    assert.match(tested.stdout, /SUCCESS/);
  });

  it('reads metric names out of PromQL as the checks below need', () => {
    assert.deepEqual(
      [
        ...metricNames(
          'histogram_quantile(0.95, sum by (le, code) (rate(a_bucket{job=~"x", s="y or z"}[5m]))) / ' +
            'on (instance) group_left (kind) b_total > bool 0 and time() - c unless absent(up{job="d"})',
        ),
      ].sort(),
      ['a_bucket', 'b_total', 'c', 'up'],
    );
  });

  it(
    'a real Prometheus scraping a real daemon: every dashboard query and rule parses, names only metrics the ' +
      'daemon exports, and shows what the daemon has; an alert goes pending on a failed path and on a dead daemon',
    async () => {
      const env = queueEnv();
      const to = `file://${tempDir('monitoring-cache')}`;
      const paths = await buildFixtures(['tiny'], { nonce: `monitoring-${Date.now()}` });
      const daemon = startDaemon(
        ['--to', to, '--secret-key-file', key.secretFile, '--metrics-listen', '127.0.0.1:0'],
        env,
      );
      const metricsUrl = String((await daemon.waitForLog('serving metrics'))['metrics']);
      await daemon.waitForLog('ready');
      // One path that goes up, one that fails for good (not in the store), and a GC run on record.
      assert.equal((await cachectl(['enqueue', paths.tiny], env)).code, 0);
      const gone = '/nix/store/00000000000000000000000000000000-cachectl-monitoring-gone';
      assert.equal((await run(HOOK, [], { ...env, OUT_PATHS: gone })).code, 0);
      const gc = await cachectl(['gc', '--to', to, '--older-than', '0s', '--grace', '0s', '--dry-run'], env);
      assert.equal(gc.code, 0, gc.stderr);
      const page = await waitFor('the daemon to upload one path and fail the other', async () => {
        const text = await (await fetch(metricsUrl)).text();
        const { samples } = parseExposition(text);
        return samples.get('cachectl_queue_paths{state="done"}') === 1 &&
          samples.get('cachectl_queue_paths{state="failed"}') === 1
          ? parseExposition(text)
          : undefined;
      });
      const exported = (name: string): boolean =>
        PROMETHEUS_OWN.has(name) || familyOf(name, page.families) !== undefined;
      const withSamples = (name: string): boolean =>
        PROMETHEUS_OWN.has(name) || [...page.samples.keys()].some((sample) => sample.split('{')[0] === name);

      const prometheus = await startPrometheus(new URL(metricsUrl).host);
      // Rates need two scrapes in their window: wait for three of the daemon.
      await waitFor(
        'three scrapes of the daemon',
        async () => {
          const { data } = await prometheus.query('count_over_time(up{job="cachectl"}[1m])');
          return Number(data.result[0]?.value[1] ?? 0) >= 3 ? true : undefined;
        },
        60_000,
        prometheus.log,
      );

      // The dashboard.
      const queries = dashboardQueries();
      assert.ok(queries.length >= 25, `${queries.length} queries`);
      const named = new Set<string>();
      for (const { panel, expr } of queries) {
        const names = metricNames(expr);
        assert.ok(names.size > 0, `${panel}: ${expr} names no metric`);
        for (const name of names) {
          assert.ok(exported(name), `${panel}: ${expr} reads ${name}, which the daemon does not export`);
          named.add(name);
        }
        const answer = await prometheus.query(expr);
        assert.equal(answer.status, 'success', `${panel}: ${expr}: ${answer.error ?? ''}`);
        // Where every metric it reads has samples on the page, the panel shows something.
        if ([...names].every(withSamples)) assert.ok(answer.data.result.length > 0, `${panel}: ${expr} shows nothing`);
      }
      // What the issue asks the dashboard to show.
      for (const subject of [
        'cachectl_queue_paths',
        'cachectl_oldest_pending_seconds',
        'cachectl_uploaded_paths_total',
        'cachectl_uploaded_nar_bytes_total',
        'cachectl_upload_failures_total',
        'cachectl_daemon_pauses_total',
        'cachectl_gc_last_run_timestamp_seconds',
        'process_resident_memory_bytes',
        'process_cpu_seconds_total',
        'nodejs_eventloop_lag_p99_seconds',
        'nodejs_gc_duration_seconds_sum',
      ])
        assert.ok(named.has(subject), `the dashboard shows ${subject}`);
      const failuresShown = await prometheus.query(
        'sum by (code) (increase(cachectl_upload_failures_total{job=~".+"}[1m])) >= 0',
      );
      assert.deepEqual(
        failuresShown.data.result.map((series) => series.metric['code']),
        ['PATH_NOT_VALID'],
      );

      // The rules, as Prometheus loaded and evaluated them.
      type Rule = { name: string; query: string; health: string; state: string; lastError?: string };
      const rules = await waitFor('every rule evaluated', async () => {
        const { data } = await prometheus.api<{ groups: { rules: (Rule & { lastEvaluation: string })[] }[] }>('rules');
        const all = data.groups.flatMap((group) => group.rules);
        return all.length > 0 && all.every((rule) => !rule.lastEvaluation.startsWith('0001')) ? all : undefined;
      });
      assert.deepEqual(rules.map((rule) => rule.name).sort(), [...ALERT_NAMES].sort());
      for (const rule of rules) {
        assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError ?? ''}`);
        for (const name of metricNames(rule.query))
          assert.ok(
            exported(name),
            `alert ${rule.name}: ${rule.query} reads ${name}, which the daemon does not export`,
          );
      }
      const stateOf = async (alert: string): Promise<string | undefined> => {
        const { data } = await prometheus.api<{ groups: { rules: Rule[] }[] }>('rules?type=alert');
        return data.groups.flatMap((group) => group.rules).find((rule) => rule.name === alert)?.state;
      };
      await waitFor('CachectlPathsFailed to go pending on the failed path', async () =>
        (await stateOf('CachectlPathsFailed')) === 'pending' ? true : undefined,
      );
      assert.equal(await stateOf('CachectlGcFailed'), 'inactive');
      assert.equal(await stateOf('CachectlGcStale'), 'inactive');
      assert.equal(await stateOf('CachectlDaemonDown'), 'inactive');
      assert.equal(await stateOf('CachectlDaemonAbsent'), 'inactive');

      daemon.child.kill('SIGTERM');
      assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.stderr());
      await waitFor('CachectlDaemonDown to go pending once the daemon is gone', async () =>
        (await stateOf('CachectlDaemonDown')) === 'pending' ? true : undefined,
      );
    },
  );
});
