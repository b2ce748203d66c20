import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { type Config, requiredCacheUrl } from '../core/config.js';
import { errorText } from '../core/errors.js';
import { formatDuration } from '../core/duration.js';
import { openCache } from '../cache/open.js';
import { collectGarbage, type GcReport, type Tally } from '../gc/gc.js';
import { KINDS, type ByKind } from '../gc/plan.js';
import { MetaCache } from '../gc/meta-cache.js';
import { Queue } from '../queue/queue.js';
import type { GcRun } from '../queue/gc-runs.js';
import { formatBytes } from './progress.js';

const KIND_NAMES: ByKind<string> = {
  narinfos: 'narinfos',
  nars: 'NARs',
  logs: 'logs',
  listings: 'listings',
  realisations: 'realisations',
};

/** Where the parsed narinfos of a cache are kept between runs: one file per cache URL. */
export function defaultMetadataCache(displayUrl: string, env: Readonly<Record<string, string | undefined>>): string {
  const base = env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache');
  return join(base, 'cachectl', `gc-${createHash('sha256').update(displayUrl).digest('hex').slice(0, 16)}.db`);
}

/**
 * Keeps a GC run's summary in the queue on this machine, for `status` and the daemon's metrics, when there is
 * a queue. Returns why it could not, if it could not.
 */
export function recordGcRun(queueFile: string, run: GcRun): string | undefined {
  if (!existsSync(queueFile)) return undefined;
  try {
    const queue = Queue.openExisting(queueFile);
    try {
      queue.gcRuns.record(run);
    } finally {
      queue.close();
    }
    return undefined;
  } catch (err) {
    return `cannot record this run in the queue ${queueFile} (status and metrics will not show it): ${errorText(err)}`;
  }
}

/** `cachectl gc`: one run of the bucket GC; `onRun` gets its summary, also when it fails. */
export async function gcCommand(
  flags: { dryRun?: boolean },
  config: Config,
  env: Readonly<Record<string, string | undefined>>,
  onProgress?: (note: string) => void,
  onRun?: (run: GcRun) => void,
): Promise<GcReport & { olderThan: string; grace: string }> {
  const cacheUrl = requiredCacheUrl(config);
  const { olderThanMs, graceMs } = config;
  const backend = await openCache(cacheUrl, { headers: config.objectHeaders });
  const metaCache = MetaCache.open(config.metadataCache ?? defaultMetadataCache(backend.displayUrl, env));
  const startedAt = Date.now();
  try {
    const report = await collectGarbage({
      backend,
      olderThanMs,
      graceMs,
      dryRun: flags.dryRun === true,
      metaCache,
      jobs: Math.max(config.jobs, 16),
      ...(onProgress === undefined ? {} : { onProgress }),
    });
    const deleted = KINDS.map((kind) => report.deleted[kind]);
    onRun?.({
      cache: backend.displayUrl,
      finishedAt: Date.now(),
      seconds: report.seconds,
      dryRun: report.dryRun,
      ok: report.stopped === undefined,
      deletedObjects:
        deleted.reduce((sum, tally) => sum + tally.count, 0) + report.deleted.leases + report.deleted.sweepMarks,
      deletedBytes: deleted.reduce((sum, tally) => sum + tally.bytes, 0),
      ...(report.stopped === undefined ? {} : { problem: report.stopped }),
    });
    return { ...report, olderThan: formatDuration(olderThanMs), grace: formatDuration(graceMs) };
  } catch (err) {
    const seconds = (Date.now() - startedAt) / 1000;
    onRun?.({
      cache: backend.displayUrl,
      finishedAt: Date.now(),
      seconds,
      dryRun: flags.dryRun === true,
      ok: false,
      deletedObjects: 0,
      deletedBytes: 0,
      problem: errorText(err),
    });
    throw err;
  } finally {
    metaCache.close();
    await backend.close();
  }
}

export function formatGcReport(report: GcReport & { olderThan: string; grace: string }): string {
  const show = (tally: Tally, what: string) => `${tally.count} ${what} (${formatBytes(tally.bytes)})`;
  const showAll = (tallies: ByKind<Tally>) => KINDS.map((kind) => show(tallies[kind], KIND_NAMES[kind])).join(', ');
  const { deleted, waiting } = report;
  const lines = [
    `${report.dryRun ? 'would delete' : 'deleted'} ${showAll(deleted)}, ` +
      `${deleted.leases} expired leases, ${deleted.sweepMarks} marks of stopped GCs` +
      ` — ${formatBytes(KINDS.reduce((sum, kind) => sum + deleted[kind].bytes, 0))} ` +
      `freed${report.dryRun ? ' (dry run: nothing deleted)' : ''}`,
    `kept ${report.reachable} of ${report.narinfos} narinfos: the closures of ${report.roots.pinned} pinned paths, ` +
      `${report.roots.recent} narinfos newer than ${report.olderThan}, ${report.roots.young} more newer than ` +
      `${report.grace} and ${report.roots.leased} paths writers hold`,
  ];
  if (KINDS.some((kind) => waiting[kind].count > 0))
    lines.push(`marked, deleted once marked for ${report.grace}: ${showAll(waiting)}`);
  if (report.young.count > 0)
    lines.push(`unreachable but younger than ${report.grace}, not marked yet: ${show(report.young, 'objects')}`);
  if (report.spared > 0)
    lines.push(`spared ${report.spared} objects that a new pin or lease protected just before their delete`);
  if (report.brokenNarInfos > 0)
    lines.push(
      `${report.brokenNarInfos} narinfos refer to paths the cache does not have (they were like that before this run)`,
    );
  for (const problem of report.problems) lines.push(`problem: ${problem}`);
  if (report.foreign.length > 0) lines.push(`not cachectl's, left alone: ${report.foreign.join(', ')}`);
  if (report.stopped !== undefined) lines.push(`stopped early: ${report.stopped}`);
  lines.push(`took ${report.seconds.toFixed(1)} s`);
  return `${lines.join('\n')}\n`;
}
