/**
 * `cachectl verify`: the whole bucket checked the way Nix's readers would see it, without a local store. Every
 * narinfo must parse by Nix's rules, name a NAR that is there with its FileSize, have every reference's narinfo,
 * and carry a valid signature by a trusted key; listings, realisations and their build traces must belong to a
 * narinfo, and logs to a derivation a narinfo or a build trace names. With `deep`, every NAR is read: its
 * FileHash, and the NarHash and NarSize of what it decompresses to.
 *
 * What it finds is a problem when a Nix reader would fail on it or data is lost, and a warning otherwise (Nix
 * reads on, and nothing is lost): only problems count, unless the caller is strict (`--strict`).
 *
 * Safe while writers push and a GC sweeps: what looks missing is looked up again before it is reported (a writer
 * puts the NAR, then the narinfo; a GC deletes the narinfo, then the NAR), and listings of paths a live lease
 * names are in flight, not orphans.
 */
import { createHash } from 'node:crypto';
import { errorText } from '../core/errors.js';
import { forEachLimit, mapLimit } from '../core/limit.js';
import { formatHash } from '../core/hash.js';
import { parseNarInfo, type NarInfo } from '../core/narinfo.js';
import {
  buildTraceFingerprint,
  parseBuildTrace,
  parseRealisation,
  realisationFingerprint,
} from '../core/realisation.js';
import { fingerprint, verifySignature, type PublicKey } from '../core/signing.js';
import { DEFAULT_STORE_DIR, hashPartOf } from '../core/store-path.js';
import { listAll, listDeep, type CacheBackend } from '../cache/backend.js';
import {
  BUILD_TRACE_PREFIX,
  buildTraceOf,
  CACHE_INFO_KEY,
  cacheInfoStoreDir,
  isLogKey,
  listingHashPart,
  LOG_PREFIX,
  NAR_PREFIX,
  narInfoHashPart,
  narInfoKey,
  REALISATIONS_PREFIX,
} from '../cache/layout.js';
import { RootReader } from '../gc/roots.js';
import { canDecompress, decompress } from '../upload/compress.js';

export type Severity = 'problem' | 'warning';

/**
 * What can be wrong, in the report's order, each with how bad it is: a problem makes a Nix reader fail, or
 * means data is lost; a warning leaves Nix reading on and loses nothing.
 */
export const SEVERITY = {
  'cache-info-missing': 'problem',
  'narinfo-malformed': 'problem',
  'nar-missing': 'problem',
  /** what the narinfo says was uploaded is not what is there: truncated or replaced */
  'nar-size-mismatch': 'problem',
  'nar-corrupt': 'problem',
  'nar-hash-mismatch': 'problem',
  'reference-missing': 'problem',
  /** no valid signature by a trusted key, and one in a trusted key's name fails: Nix refuses the path */
  'signature-invalid': 'problem',
  /** no signature by a trusted key: Nix refuses the path */
  'signature-untrusted': 'problem',
  'realisation-malformed': 'problem',
  'realisation-output-missing': 'problem',
  /** the NAR decompresses to its NarHash: Nix, which checks that, reads it */
  'file-hash-mismatch': 'warning',
  /** a signature in a trusted key's name fails beside one that verifies, which is what Nix goes by */
  'signature-invalid-beside-valid': 'warning',
  /** a content-addressed path without a valid trusted signature: Nix trusts it by its content */
  'content-addressed-unsigned': 'warning',
  /** no Nix checks a realisation's signatures (it checks the output's) */
  'realisation-signature-invalid': 'warning',
  'realisation-signature-untrusted': 'warning',
  'listing-orphan': 'warning',
  /** no Nix reads a cache's listings */
  'listing-malformed': 'warning',
  'log-orphan': 'warning',
} as const satisfies Record<string, Severity>;
export type ProblemKind = keyof typeof SEVERITY;
export const PROBLEM_KINDS = Object.keys(SEVERITY) as ProblemKind[];

export interface Problem {
  kind: ProblemKind;
  /** the object that is wrong */
  key: string;
  /** the store path it is of, when known */
  path?: string;
  /** for reference-missing: the missing reference, a base name */
  reference?: string;
  message: string;
}

export interface VerifyReport {
  cache: string;
  deep: boolean;
  /** names of the keys signatures were checked against (none: not checked) */
  trustedKeys: string[];
  checked: {
    narinfos: number;
    nars: number;
    narBytesRead: number;
    listings: number;
    realisations: number;
    buildTraces: number;
    logs: number;
  };
  /** what makes Nix fail or loses data */
  problems: Problem[];
  /** the rest: Nix reads on, nothing is lost */
  warnings: Problem[];
  /** problems and warnings by kind, every kind present (0 when none) */
  byKind: Record<ProblemKind, number>;
  /** what was not checked, and why */
  notes: string[];
}

export interface VerifyOptions {
  backend: CacheBackend;
  trustedKeys: readonly PublicKey[];
  deep: boolean;
  /** NARs read at once with `deep`; narinfos are read 8 times as many at once */
  jobs: number;
  /** a line on how far it got, now and then */
  onProgress?: (text: string) => void;
}

/** Narinfos read per batch (file:// reads a batch in worker threads). */
const READ_BATCH = 512;
const REQUESTS_PER_JOB = 8;
const PROGRESS_EVERY_MS = 250;

interface Checked {
  key: string;
  info: NarInfo;
}

export async function verifyCache(options: VerifyOptions): Promise<VerifyReport> {
  const { backend, trustedKeys } = options;
  const requests = Math.max(16, options.jobs * REQUESTS_PER_JOB);
  const problems: Problem[] = [];
  const notes: string[] = [];
  const progress = throttled(options.onProgress);

  const cacheInfo = await backend.get(CACHE_INFO_KEY);
  const storeDir = cacheInfo === undefined ? DEFAULT_STORE_DIR : cacheInfoStoreDir(cacheInfo.toString('utf8'));
  if (storeDir === undefined || cacheInfo === undefined) {
    problems.push({
      kind: 'cache-info-missing',
      key: CACHE_INFO_KEY,
      message:
        cacheInfo === undefined
          ? `${CACHE_INFO_KEY} is missing: Nix refuses the cache as a substituter`
          : `${CACHE_INFO_KEY} names no StoreDir`,
    });
  }
  const store = storeDir ?? DEFAULT_STORE_DIR;

  // Narinfos before NARs: a NAR goes up before its narinfo, so every narinfo listed has its NAR listed after.
  const top = await listAll(backend, '');
  const narInfoKeys = top.filter((entry) => narInfoHashPart(entry.key) !== undefined).map((entry) => entry.key);
  const listingEntries = top.filter((entry) => listingHashPart(entry.key) !== undefined);
  const narSizes = new Map((await listAll(backend, NAR_PREFIX)).map((entry) => [entry.key, entry.sizeBytes]));
  const realisationKeys = (await listAll(backend, REALISATIONS_PREFIX)).map((entry) => entry.key);
  const buildTraceKeys = (await listDeep(backend, BUILD_TRACE_PREFIX)).map((entry) => entry.key);
  const logKeys = (await listAll(backend, LOG_PREFIX)).map((entry) => entry.key).filter(isLogKey);
  const hashParts = new Set(narInfoKeys.map((key) => narInfoHashPart(key) as string));

  // Whether `key` is still there: what a listing missed or a GC deleted since is told apart from what is missing.
  const stillThere = (key: string) => backend.exists(key);
  const confirmed = async (problem: Problem, gone: string, owner: string): Promise<void> => {
    if (!(await stillThere(gone)) && (await stillThere(owner))) problems.push(problem);
  };

  const checked: Checked[] = [];
  for (let at = 0; at < narInfoKeys.length; at += READ_BATCH) {
    const keys = narInfoKeys.slice(at, at + READ_BATCH);
    const bodies = backend.getMany
      ? await backend.getMany(keys)
      : await mapLimit(keys, requests, backend.get.bind(backend));
    keys.forEach((key, i) => {
      const body = bodies[i];
      if (body === undefined) return; // deleted since the listing
      const hashPart = narInfoHashPart(key) as string;
      try {
        const info = parseNarInfo(body.toString('utf8'), key, store);
        if (hashPartOf(info.storePath) !== hashPart)
          throw new Error(`narinfo ${key} is malformed: its StorePath ${info.storePath} is another path's`);
        checked.push({ key, info });
      } catch (err) {
        problems.push({ kind: 'narinfo-malformed', key, message: errorText(err) });
      }
    });
    progress(`narinfos ${Math.min(at + READ_BATCH, narInfoKeys.length)}/${narInfoKeys.length}`);
  }

  await forEachLimit(checked.length, requests, async (index) => {
    const { key, info } = checked[index] as Checked;
    const path = info.storePath;
    const size = narSizes.get(info.url);
    if (size === undefined) {
      await confirmed(
        { kind: 'nar-missing', key, path, message: `${key}: its NAR ${info.url} is missing` },
        info.url,
        key,
      );
    } else if (info.fileSize !== undefined && size !== info.fileSize) {
      problems.push({
        kind: 'nar-size-mismatch',
        key,
        path,
        message: `${key}: its NAR ${info.url} has ${size} bytes, not its FileSize ${info.fileSize}`,
      });
    }
    for (const reference of info.references) {
      const refPart = hashPartOf(reference);
      if (refPart === hashPartOf(path) || hashParts.has(refPart)) continue;
      await confirmed(
        {
          kind: 'reference-missing',
          key,
          path,
          reference,
          message: `${key}: its reference ${store}/${reference} has no narinfo`,
        },
        narInfoKey(refPart),
        key,
      );
    }
    if (trustedKeys.length > 0) {
      const references = info.references.map((ref) => `${store}/${ref}`);
      const problem = signatureProblem(
        trustedKeys,
        fingerprint(path, info.narHash.digest, info.narSize, references),
        info.sigs,
      );
      if (problem !== undefined) {
        const kinds = {
          invalid: 'signature-invalid',
          untrusted: 'signature-untrusted',
          'beside-valid': 'signature-invalid-beside-valid',
        } as const;
        problems.push({
          kind:
            info.ca !== undefined && problem.kind !== 'beside-valid'
              ? 'content-addressed-unsigned'
              : kinds[problem.kind],
          key,
          path,
          message: `${key}: ${problem.message}`,
        });
      }
    }
  });
  if (trustedKeys.length === 0) notes.push('signatures were not checked: give --trusted-public-key');

  let narBytesRead = 0;
  let narsRead = 0;
  if (options.deep) {
    // A NAR of the wrong size is reported as that already.
    const wrongSize = new Set(problems.filter((p) => p.kind === 'nar-size-mismatch').map((p) => p.key));
    const readable = checked.filter(
      ({ key, info }) => narSizes.has(info.url) && !wrongSize.has(key) && canDecompress(info.compression),
    );
    const unreadable = new Set(
      checked.filter(({ info }) => !canDecompress(info.compression)).map((c) => c.info.compression),
    );
    for (const compression of unreadable) notes.push(`NARs compressed with ${compression} were not read`);
    const total = readable.reduce((sum, { info }) => sum + (info.fileSize ?? 0), 0);
    await forEachLimit(readable.length, options.jobs, async (index) => {
      const { key, info } = readable[index] as Checked;
      const problem = await deepProblem(backend, info, (bytes) => {
        narBytesRead += bytes;
        const mib = (bytes: number) => Math.round(bytes / 1048576);
        progress(`NARs ${narsRead}/${readable.length}, ${mib(narBytesRead)}/${mib(total)} MiB`);
      });
      narsRead += 1;
      if (problem !== undefined && (await stillThere(key)))
        problems.push({ ...problem, key, path: info.storePath, message: `${key}: ${problem.message}` });
    });
  }

  const pathOf = new Map(checked.map(({ info }) => [hashPartOf(info.storePath), info.storePath]));
  // The paths live leases name, read once, and only when an orphan listing or log needs them.
  let leasedNow: Promise<ReadonlySet<string>> | undefined;
  const liveLeases = () => (leasedNow ??= new RootReader(backend).read(Date.now()).then((roots) => roots.leased));
  // Listings: in flight when a live lease names the path (a writer puts the listing before the narinfo).
  const leased = listingEntries.some((entry) => !hashParts.has(listingHashPart(entry.key) as string))
    ? await liveLeases()
    : new Set<string>();
  await forEachLimit(listingEntries.length, requests, async (index) => {
    const { key } = listingEntries[index] as (typeof listingEntries)[number];
    const hashPart = listingHashPart(key) as string;
    if (!hashParts.has(hashPart)) {
      if (leased.has(hashPart) || (await stillThere(narInfoKey(hashPart)))) return;
      if (await stillThere(key))
        problems.push({
          kind: 'listing-orphan',
          key,
          message: `${key} belongs to no narinfo (${narInfoKey(hashPart)} is missing)`,
        });
      return;
    }
    if (!options.deep) return;
    const body = await backend.get(key);
    const why = body === undefined ? undefined : listingProblem(body);
    const path = pathOf.get(hashPart);
    if (why !== undefined)
      problems.push({
        kind: 'listing-malformed',
        key,
        ...(path === undefined ? {} : { path }),
        message: `${key} is malformed: ${why}`,
      });
  });

  // Realisations as Nix <= 2.34 reads them, and as Nix 2.35 does (build traces): each needs its output's narinfo.
  const traceDerivations = new Set<string>();
  const realisationChecks = [
    ...realisationKeys.map((key) => ({ key, trace: undefined })),
    ...buildTraceKeys.map((key) => ({ key, trace: buildTraceOf(key) })),
  ];
  await forEachLimit(realisationChecks.length, requests, async (index) => {
    const { key, trace } = realisationChecks[index] as (typeof realisationChecks)[number];
    if (trace !== undefined) traceDerivations.add(trace.drvPath);
    const body = await backend.get(key);
    if (body === undefined) return;
    let outPath: string;
    let signed: { text: string; signatures: string[] };
    try {
      if (key.startsWith(BUILD_TRACE_PREFIX)) {
        if (trace === undefined) throw new Error(`${key} is not build-trace-v2/<drv base name>/<output>.doi`);
        const parsed = parseBuildTrace(body.toString('utf8'), trace, key);
        outPath = parsed.outPath;
        signed = { text: buildTraceFingerprint(parsed), signatures: parsed.signatures };
      } else {
        const parsed = parseRealisation(body.toString('utf8'), key);
        outPath = parsed.outPath;
        signed = { text: realisationFingerprint(parsed), signatures: parsed.signatures };
      }
    } catch (err) {
      problems.push({ kind: 'realisation-malformed', key, message: errorText(err) });
      return;
    }
    const path = `${store}/${outPath}`;
    if (!hashParts.has(hashPartOf(outPath))) {
      if (!(await stillThere(narInfoKey(hashPartOf(outPath)))) && (await stillThere(key)))
        problems.push({
          kind: 'realisation-output-missing',
          key,
          path,
          message: `${key}: its output ${path} has no narinfo`,
        });
    }
    if (trustedKeys.length > 0) {
      const problem = signatureProblem(trustedKeys, signed.text, signed.signatures);
      if (problem !== undefined)
        problems.push({
          kind: problem.kind === 'untrusted' ? 'realisation-signature-untrusted' : 'realisation-signature-invalid',
          key,
          path,
          message: `${key}: ${problem.message}`,
        });
    }
  });

  // Logs: under the deriver of a narinfo, or under the derivation a build trace names (the one a
  // content-addressed derivation was resolved from). A writer puts a log before its narinfo, under a lease.
  const derivers = new Set(checked.flatMap(({ info }) => info.deriver ?? []));
  const unclaimed = logKeys.filter((key) => {
    const drv = key.slice(LOG_PREFIX.length);
    return !derivers.has(drv) && !traceDerivations.has(drv);
  });
  if (unclaimed.length > 0 && (await liveLeases()).size > 0)
    notes.push(`${unclaimed.length} logs of no narinfo were not reported: writers are pushing (live leases)`);
  else
    await forEachLimit(unclaimed.length, requests, async (index) => {
      const key = unclaimed[index] as string;
      if (await stillThere(key))
        problems.push({ kind: 'log-orphan', key, message: `${key} belongs to no narinfo's deriver or build trace` });
    });

  const byKind = Object.fromEntries(PROBLEM_KINDS.map((kind) => [kind, 0])) as Record<ProblemKind, number>;
  for (const problem of problems) byKind[problem.kind] += 1;
  problems.sort((a, b) => PROBLEM_KINDS.indexOf(a.kind) - PROBLEM_KINDS.indexOf(b.kind) || (a.key < b.key ? -1 : 1));
  return {
    cache: backend.displayUrl,
    deep: options.deep,
    trustedKeys: trustedKeys.map((key) => key.name),
    checked: {
      narinfos: checked.length + byKind['narinfo-malformed'],
      nars: options.deep ? narsRead : narSizes.size,
      narBytesRead,
      listings: listingEntries.length,
      realisations: realisationKeys.length,
      buildTraces: buildTraceKeys.length,
      logs: logKeys.length,
    },
    problems: problems.filter((problem) => SEVERITY[problem.kind] === 'problem'),
    warnings: problems.filter((problem) => SEVERITY[problem.kind] === 'warning'),
    byKind,
    notes,
  };
}

/**
 * What is wrong with the signatures of an object, as Nix counts them: one valid signature by a trusted key is
 * enough. `invalid`: none verifies, and one in a trusted key's name fails; `untrusted`: none by a trusted key;
 * `beside-valid`: one verifies, and another in a trusted key's name fails (corrupted, or another key of that name).
 */
function signatureProblem(
  trustedKeys: readonly PublicKey[],
  text: string,
  sigs: readonly string[],
): { kind: 'invalid' | 'untrusted' | 'beside-valid'; message: string } | undefined {
  const trustedNames = new Set(trustedKeys.map((key) => key.name));
  const byName = (sig: string) => sig.slice(0, sig.indexOf(':'));
  const invalid = sigs.filter((sig) => trustedNames.has(byName(sig)) && !verifySignature(trustedKeys, text, sig));
  const valid = sigs.some((sig) => verifySignature(trustedKeys, text, sig));
  if (invalid.length > 0)
    return {
      kind: valid ? 'beside-valid' : 'invalid',
      message: `its signature by ${invalid.map(byName).join(', ')} does not verify`,
    };
  if (valid) return undefined;
  return {
    kind: 'untrusted',
    message:
      sigs.length === 0
        ? 'it is not signed'
        : `it is signed only by keys not trusted: ${[...new Set(sigs.map(byName))].join(', ')}`,
  };
}

/** Reads a NAR: what its bytes hash to, what it decompresses to; the problem found, if any. */
async function deepProblem(
  backend: CacheBackend,
  info: NarInfo,
  onBytes: (bytes: number) => void,
): Promise<{ kind: ProblemKind; message: string } | undefined> {
  const body = await backend.getStream(info.url);
  if (body === undefined) return undefined; // deleted since: nar-missing's business, checked by listing
  const fileHash = createHash(info.fileHash?.algorithm ?? 'sha256');
  const narHash = createHash(info.narHash.algorithm);
  let narSize = 0;
  const counted = async function* (): AsyncGenerator<Buffer> {
    for await (const chunk of body) {
      fileHash.update(chunk);
      onBytes(chunk.length);
      yield chunk;
    }
  };
  try {
    for await (const chunk of decompress(counted(), info.compression)) {
      narHash.update(chunk);
      narSize += chunk.length;
    }
  } catch (err) {
    return { kind: 'nar-corrupt', message: `its NAR ${info.url} ${errorText(err)}` };
  }
  const digest = narHash.digest();
  if (!digest.equals(info.narHash.digest) || narSize !== info.narSize)
    return {
      kind: 'nar-hash-mismatch',
      message:
        `its NAR ${info.url} decompresses to ${narSize} bytes hashing to ` +
        `${formatHash({ algorithm: info.narHash.algorithm, digest })}, not its NarSize ${info.narSize} and NarHash`,
    };
  // What it decompresses to is right, which is what Nix checks: only the narinfo's FileHash is wrong.
  const fileDigest = fileHash.digest();
  if (info.fileHash !== undefined && !fileDigest.equals(info.fileHash.digest))
    return {
      kind: 'file-hash-mismatch',
      message:
        `its NAR ${info.url} hashes to ${formatHash({ algorithm: info.fileHash.algorithm, digest: fileDigest })}, ` +
        'not its FileHash, though it decompresses to its NarHash',
    };
  return undefined;
}

/** Why a listing is not one Nix reads (`{"version":1,"root":{…}}`), or undefined. */
function listingProblem(body: Buffer): string | undefined {
  let listing: unknown;
  try {
    listing = JSON.parse(body.toString('latin1'));
  } catch (err) {
    return `not JSON: ${errorText(err)}`;
  }
  const { version, root } = (listing ?? {}) as { version?: unknown; root?: unknown };
  if (version !== 1) return `its version is ${JSON.stringify(version)}, not 1`;
  if (typeof root !== 'object' || root === null || typeof (root as { type?: unknown }).type !== 'string')
    return 'it has no root entry with a type';
  return undefined;
}

/** `report`, called at most every PROGRESS_EVERY_MS. */
function throttled(report: ((text: string) => void) | undefined): (text: string) => void {
  let last = 0;
  return (text) => {
    const now = Date.now();
    if (report === undefined || now - last < PROGRESS_EVERY_MS) return;
    last = now;
    report(text);
  };
}
