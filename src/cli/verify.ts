import { type Config, requiredCacheUrl } from '../core/config.js';
import { openCache } from '../cache/open.js';
import { LeaseWriter } from '../gc/lease.js';
import { LocalStore } from '../nix/local-store.js';
import { openSigner } from '../upload/signer.js';
import { repairCache, type RepairResult } from '../verify/repair.js';
import { PROBLEM_KINDS, verifyCache, type Problem, type VerifyReport } from '../verify/verify.js';
import { formatBytes } from './progress.js';

export interface VerifyCommandResult {
  /** whether warnings count as problems (--strict): for the exit status and for what a repair takes on */
  strict: boolean;
  /** what was found */
  report: VerifyReport;
  /** with --repair: what was done, and the bucket checked again after it */
  repair?: RepairResult & { after: VerifyReport };
}

/** Problems printed one by one per kind; the rest are counted (--json lists them all). */
const PROBLEMS_SHOWN = 20;

/** What counts against the cache: its problems, and with `strict` its warnings too. */
function counted(report: VerifyReport, strict: boolean): Problem[] {
  return strict ? [...report.problems, ...report.warnings] : report.problems;
}

/**
 * `cachectl verify`: checks the whole cache; with `repair`, uploads again what is broken (with `strict`, what
 * it warns of too), then checks again.
 */
export async function verifyCommand(
  flags: { deep?: boolean; repair?: boolean; strict?: boolean },
  config: Config,
  onProgress?: (text: string) => void,
): Promise<VerifyCommandResult> {
  const cacheUrl = requiredCacheUrl(config);
  const signer = flags.repair === true ? await openSigner(config) : undefined;
  const backend = await openCache(cacheUrl, { headers: config.objectHeaders });
  try {
    const check = () =>
      verifyCache({
        backend,
        trustedKeys: config.trustedPublicKeys,
        deep: flags.deep === true,
        jobs: config.jobs,
        ...(onProgress === undefined ? {} : { onProgress }),
      });
    const strict = flags.strict === true;
    const report = await check();
    const broken = counted(report, strict);
    if (signer === undefined || broken.length === 0) return { strict, report };
    const store = new LocalStore({ dbPath: config.nixDb, logDir: config.nixLogDir });
    const lease = new LeaseWriter(backend);
    try {
      onProgress?.(`repairing ${broken.length} problems`);
      const repaired = await repairCache(broken, {
        backend,
        store,
        lease,
        signer,
        trustedKeys: config.trustedPublicKeys,
        compression: config.compression,
        narListing: config.narListing,
        jobs: config.jobs,
      });
      return { strict, report, repair: { ...repaired, after: await check() } };
    } finally {
      lease.close();
      store.close();
    }
  } finally {
    await backend.close();
    signer?.close();
  }
}

/** Whether the cache is whole in the end (after the repair, if any): no problem, and if strict no warning. */
export function verifyPassed(result: VerifyCommandResult): boolean {
  return counted(result.repair?.after ?? result.report, result.strict).length === 0;
}

export function formatVerifyReport(result: VerifyCommandResult): string {
  const lines = [...formatReport(result.report)];
  const { repair } = result;
  if (repair !== undefined) {
    lines.push(
      `repair: ${repair.uploaded.length} paths uploaded, ${repair.resigned.length} realisations and build traces ` +
        `signed again, ` +
        `${repair.deleted.length} orphan objects deleted, ${repair.unrepaired.length} not repaired`,
    );
    for (const path of repair.uploaded) lines.push(`  uploaded ${path}`);
    for (const key of repair.resigned) lines.push(`  signed again ${key}`);
    for (const key of repair.deleted) lines.push(`  deleted ${key}`);
    for (const { key, why } of repair.unrepaired) lines.push(`  NOT REPAIRED ${key}: ${why}`);
    lines.push('after the repair:', ...formatReport(repair.after).map((line) => `  ${line}`));
  }
  return `${lines.join('\n')}\n`;
}

function formatReport(report: VerifyReport): string[] {
  const { checked } = report;
  const lines = [
    `verified ${report.cache}: ${checked.narinfos} narinfos, ${checked.nars} NARs` +
      (report.deep ? ` read (${formatBytes(checked.narBytesRead)})` : '') +
      `, ${checked.listings} listings, ${checked.realisations} realisations, ${checked.buildTraces} build traces, ` +
      `${checked.logs} logs` +
      (report.trustedKeys.length > 0 ? `; signatures checked against ${report.trustedKeys.join(', ')}` : ''),
  ];
  for (const note of report.notes) lines.push(`note: ${note}`);
  if (report.problems.length === 0) lines.push('no problems found');
  else
    lines.push(`${report.problems.length} problems (Nix fails on them, or data is lost):`, ...byKind(report.problems));
  if (report.warnings.length > 0)
    lines.push(
      `${report.warnings.length} warnings (Nix reads on; they count with --strict):`,
      ...byKind(report.warnings),
    );
  return lines;
}

/** Problems by kind: a count, and each of the first few. */
function byKind(problems: readonly Problem[]): string[] {
  const lines: string[] = [];
  for (const kind of PROBLEM_KINDS) {
    const ofKind = problems.filter((problem) => problem.kind === kind);
    if (ofKind.length === 0) continue;
    lines.push(`  ${kind}: ${ofKind.length}`);
    for (const problem of ofKind.slice(0, PROBLEMS_SHOWN)) lines.push(`    ${problem.message}`);
    if (ofKind.length > PROBLEMS_SHOWN)
      lines.push(`    … and ${ofKind.length - PROBLEMS_SHOWN} more (--json lists them all)`);
  }
  return lines;
}
