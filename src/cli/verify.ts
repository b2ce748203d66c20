import { type Config, requiredCacheUrl } from '../core/config.js';
import { openCache } from '../cache/open.js';
import { LeaseWriter } from '../gc/lease.js';
import { LocalStore } from '../nix/local-store.js';
import { openSigner } from '../upload/signer.js';
import { repairCache, type RepairResult } from '../verify/repair.js';
import { PROBLEM_KINDS, verifyCache, type VerifyReport } from '../verify/verify.js';
import { formatBytes } from './progress.js';

export interface VerifyCommandResult {
  /** what was found */
  report: VerifyReport;
  /** with --repair: what was done, and the bucket checked again after it */
  repair?: RepairResult & { after: VerifyReport };
}

/** Problems printed one by one per kind; the rest are counted (--json lists them all). */
const PROBLEMS_SHOWN = 20;

/** `cachectl verify`: checks the whole cache; with `repair`, uploads again what is broken, then checks again. */
export async function verifyCommand(
  flags: { deep?: boolean; repair?: boolean },
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
    const report = await check();
    if (signer === undefined || report.problems.length === 0) return { report };
    const store = new LocalStore({ dbPath: config.nixDb, logDir: config.nixLogDir });
    const lease = new LeaseWriter(backend);
    try {
      onProgress?.(`repairing ${report.problems.length} problems`);
      const repaired = await repairCache(report.problems, {
        backend,
        store,
        lease,
        signer,
        trustedKeys: config.trustedPublicKeys,
        compression: config.compression,
        narListing: config.narListing,
        jobs: config.jobs,
      });
      return { report, repair: { ...repaired, after: await check() } };
    } finally {
      lease.close();
      store.close();
    }
  } finally {
    backend.close();
    signer?.close();
  }
}

/** Whether the cache is whole in the end: after the repair when there was one. */
export function verifyPassed(result: VerifyCommandResult): boolean {
  return (result.repair?.after ?? result.report).problems.length === 0;
}

export function formatVerifyReport(result: VerifyCommandResult): string {
  const lines = [...formatReport(result.report)];
  const { repair } = result;
  if (repair !== undefined) {
    lines.push(
      `repair: ${repair.uploaded.length} paths uploaded, ${repair.resigned.length} realisations signed again, ` +
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
      `, ${checked.listings} listings, ${checked.realisations} realisations` +
      (report.trustedKeys.length > 0 ? `; signatures checked against ${report.trustedKeys.join(', ')}` : ''),
  ];
  for (const note of report.notes) lines.push(`note: ${note}`);
  if (report.problems.length === 0) {
    lines.push('no problems found');
    return lines;
  }
  lines.push(`${report.problems.length} problems:`);
  for (const kind of PROBLEM_KINDS) {
    const ofKind = report.problems.filter((problem) => problem.kind === kind);
    if (ofKind.length === 0) continue;
    lines.push(`  ${kind}: ${ofKind.length}`);
    for (const problem of ofKind.slice(0, PROBLEMS_SHOWN)) lines.push(`    ${problem.message}`);
    if (ofKind.length > PROBLEMS_SHOWN)
      lines.push(`    … and ${ofKind.length - PROBLEMS_SHOWN} more (--json lists them all)`);
  }
  return lines;
}
