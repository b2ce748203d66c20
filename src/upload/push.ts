import { basename } from 'node:path';
import { CachectlError, errorText, type ErrorCode } from '../core/errors.js';
import { hashPartOf } from '../core/store-path.js';
import { renderNarInfo, type Compression } from '../core/narinfo.js';
import { fingerprint } from '../core/signing.js';
import type { Signer } from './signer.js';
import { Limiter, mapLimit } from '../core/limit.js';
import type { CacheBackend } from '../cache/backend.js';
import {
  buildTraceKey,
  CACHE_INFO_KEY,
  cacheInfoStoreDir,
  logKey,
  narInfoKey,
  realisationKey,
  renderCacheInfo,
} from '../cache/layout.js';
import { findPresent } from '../cache/present.js';
import { waitOutSweeps, type LeaseWriter } from '../gc/lease.js';
import {
  buildTraceFingerprint,
  realisationFingerprint,
  renderBuildTrace,
  renderRealisation,
  type Realisation,
} from '../core/realisation.js';
import { readBuildLog } from '../nix/build-log.js';
import type { LocalStore, PathInfo } from '../nix/local-store.js';
import { LARGE_NAR_BYTES, makeNarInfo, uploadNar } from './pipeline.js';

/** Logs up to this size go up whole from memory; bzip2 logs by their compressed size (text compresses ~10-20×). */
const SMALL_LOG_BYTES = 1024 * 1024;
const SMALL_COMPRESSED_LOG_BYTES = 64 * 1024;

/**
 * Large NARs streamed at once, whatever --jobs says: what keeps a push's memory bounded. One is enough to keep
 * both cores busy (its zstd has two worker threads); measured on six 60 MiB NARs, two at once were 20-30 %
 * faster but peaked at 190 MB (file://) and 230 MB (s3) against 145 MB and 185 MB.
 */
const LARGE_NARS_AT_ONCE = 1;
/**
 * Paths in flight per job: a job is the CPU's share (dump, hash, compress), and a path's requests (NAR, listing,
 * log) wait for the server meanwhile, one round trip each, which from a far-away server is longer than the work.
 * Bounds the small NARs held in memory (up to 1 MiB each) at jobs × 8.
 */
const PATHS_IN_FLIGHT_PER_JOB = 8;

export interface PushOptions {
  backend: CacheBackend;
  store: LocalStore;
  compression: Compression;
  /** whether each NAR's listing (`<hash>.ls`) goes up with it, before its narinfo */
  narListing: boolean;
  /** signs each narinfo and realisation */
  signer: Signer;
  /** NARs compressed at once; small ones are sent up to PATHS_IN_FLIGHT_PER_JOB times as many at once */
  jobs: number;
  /** counters the caller may read while the push runs (for a progress line) */
  progress?: PushProgress;
  /** the writer's lease, for pushing safely while a GC runs */
  lease?: LeaseWriter;
  /** names of keys (`cache.nixos.org-1`) whose signature marks a path as another cache's: not uploaded */
  skipSignedBy?: readonly string[];
  /**
   * Called with each root whose narinfo this push published, once its closure is whole in the cache and needs no
   * re-check for a GC sweep: the daemon marks it done there, so that a crash later in a long batch does not count
   * against it.
   */
  onRootPublished?: (root: string) => void;
  /** stops the push: no NAR starts after it aborts (the backend's requests stop with it too) */
  signal?: AbortSignal;
  /** paths of the closure uploaded again even where the cache has them (cachectl verify --repair: they are broken) */
  reupload?: ReadonlySet<string>;
}

export interface PushProgress {
  pathsTotal: number;
  pathsDone: number;
  narBytesTotal: number;
  narBytesDone: number;
}

/** Codes of push report entries besides the error codes: a failed reference, or a bug. */
export const PUSH_REPORT_CODES = ['DEPENDENCY_FAILED', 'INTERNAL'] as const;

export interface PushFailure {
  path: string;
  code: ErrorCode | (typeof PUSH_REPORT_CODES)[number];
  message: string;
  /** what went wrong in the end: the failed reference's own code when `code` is DEPENDENCY_FAILED */
  rootCode: ErrorCode | 'INTERNAL';
  /** whether trying again later can succeed */
  retryable: boolean;
  /** the wait the server asked for, if it did */
  retryAfterMs?: number;
}

export interface PushResult {
  closurePaths: number;
  alreadyPresent: number;
  /** paths signed by a `skipSignedBy` key: left to the cache that signed them */
  skippedSignedBy: number;
  uploaded: string[];
  /** paths uploaded again because a concurrent GC deleted them after they were found present or uploaded */
  repaired: string[];
  failed: PushFailure[];
  narBytes: number;
  fileBytes: number;
  /** build logs uploaded (`log/<drv>`), one per derivation whose log Nix kept */
  logs: number;
  /** realisations uploaded (`realisations/<id>.doi`) */
  realisations: number;
  /** build traces uploaded (`build-trace-v2/<drv>/<output>.doi`: the realisations as Nix >= 2.35 reads them) */
  buildTraces: number;
}

export function newProgress(): PushProgress {
  return { pathsTotal: 0, pathsDone: 0, narBytesTotal: 0, narBytesDone: 0 };
}

/** Writes `nix-cache-info` when absent; refuses a cache made for another store directory. */
export async function ensureCacheInfo(backend: CacheBackend, storeDir: string): Promise<void> {
  const existing = await backend.get(CACHE_INFO_KEY);
  if (existing === undefined) {
    await backend.put(CACHE_INFO_KEY, Buffer.from(renderCacheInfo(storeDir)), 'cacheInfo');
    return;
  }
  const cacheStoreDir = cacheInfoStoreDir(existing.toString('utf8'));
  if (cacheStoreDir !== storeDir) {
    throw new CachectlError(
      'CACHE_STORE_DIR_MISMATCH',
      `cache ${backend.displayUrl} is for the store ${cacheStoreDir ?? '(none named)'}, not ${storeDir}; use ` +
        `another cache`,
    );
  }
}

/** Cache-wide failures in a row that mean the cache is down, not flaky. */
const CACHE_DOWN_FAILURES = 3;

/** A failure of the cache itself (access, bucket, network), as opposed to one path's. */
function isCacheWide(err: unknown): err is CachectlError {
  return err instanceof CachectlError && err.code.startsWith('CACHE_');
}

/**
 * Uploads the closures of `roots`: the paths the cache lacks, NARs in parallel (see uploadOrder), each narinfo
 * published only after its NAR and the narinfos of all its references. A path that fails takes the paths that
 * reference it with it, so a reader never sees a narinfo whose NAR or references are missing.
 *
 * With a lease, the closure is leased before the cache is asked what it has, after a sweep can no longer delete
 * what the lease came too late for (see gc/lease.ts). When the lease may have lapsed (a refresh failed), the
 * closure is checked again at the end, and what a GC deleted is uploaded again.
 */
export async function pushClosures(roots: readonly string[], options: PushOptions): Promise<PushResult> {
  const { backend, store } = options;
  const progress = options.progress ?? newProgress();
  const closure = closureWithRealisations(store, roots);
  const infos = withoutSignedBy(closure.infos, options.skipSignedBy ?? []);
  const realisations = closure.realisations.filter((r) => infos.has(`${store.storeDir}/${r.outPath}`));
  // A root with realisations is whole once they are up too.
  const realised = new Set(realisations.map((r) => `${store.storeDir}/${r.outPath}`));
  await ensureCacheInfo(backend, store.storeDir);
  const hold = await options.lease?.hold([...infos.values()]);
  try {
    const present = await findPresent(backend, [...infos.keys()].map(hashPartOf));
    const missing = [...infos.values()].filter(
      (info) => !present.has(hashPartOf(info.path)) || options.reupload?.has(info.path) === true,
    );
    progress.pathsTotal = missing.length;
    progress.narBytesTotal = missing.reduce((sum, info) => sum + info.narSize, 0);
    const result: PushResult = {
      closurePaths: infos.size + infos.skipped,
      alreadyPresent: infos.size - missing.length,
      skippedSignedBy: infos.skipped,
      uploaded: [],
      repaired: [],
      failed: [],
      narBytes: 0,
      fileBytes: 0,
      logs: 0,
      realisations: 0,
      buildTraces: 0,
    };
    const rootSet = new Set(roots);
    // A root's narinfo goes up after those of its whole closure. With the lease held all along (no re-check
    // pending), a GC that runs later sees the lease or the root's fresh narinfo: the root is safe.
    const rootPublished = (path: string) => {
      if (rootSet.has(path) && !realised.has(path) && hold?.mustRecheck() !== true) options.onRootPublished?.(path);
    };
    const narKeys = await publishPaths(missing, options, progress, result, result.uploaded, rootPublished);
    if (hold?.mustRecheck()) {
      await waitOutSweeps(hold.heldAt);
      const stillPresent = await findPresent(backend, [...infos.keys()].map(hashPartOf));
      const narsGone = new Set<string>();
      await mapLimit([...narKeys], options.jobs, async ([path, key]) => {
        if (!(await backend.exists(key))) narsGone.add(path);
      });
      const failed = new Set(result.failed.map((failure) => failure.path));
      const deleted = [...infos.values()].filter(
        (info) => !failed.has(info.path) && (!stillPresent.has(hashPartOf(info.path)) || narsGone.has(info.path)),
      );
      await publishPaths(deleted, options, newProgress(), result, result.repaired);
    }
    const inCache = new Set([...infos.keys()].filter((path) => present.has(hashPartOf(path))));
    const derivations = store.realisationDerivations(realisations, infos);
    await publishRealisations(realisations, { derivations, infos }, options, result, inCache);
    // What the push wrote is on disk before it reports it done.
    await backend.flush();
    const failed = new Set(result.failed.map((failure) => failure.path));
    for (const root of roots) {
      if (realised.has(root) && !failed.has(root) && hold?.mustRecheck() !== true) options.onRootPublished?.(root);
    }
    return result;
  } finally {
    hold?.release();
  }
}

/**
 * The closures of `roots` with the realisations of their paths, and the closures of those realisations'
 * dependent realisations' outputs (a client substituting a realisation substitutes its dependents too, as
 * `nix copy` of a derivation copies them).
 */
function closureWithRealisations(
  store: LocalStore,
  roots: readonly string[],
): { infos: Map<string, PathInfo>; realisations: Realisation[] } {
  const infos = store.queryClosure(roots);
  for (;;) {
    const realisations = store.queryRealisations([...infos.keys()]);
    const outside = new Set(
      realisations
        .flatMap((r) => [...r.dependentRealisations.values()])
        .map((baseName) => `${store.storeDir}/${baseName}`)
        .filter((path) => !infos.has(path)),
    );
    const valid = [...store.queryPathInfos([...outside]).keys()];
    if (valid.length === 0) return { infos, realisations };
    for (const [path, info] of store.queryClosure(valid)) infos.set(path, info);
  }
}

/**
 * Uploads each realisation once its output's narinfo is in the cache and its dependent realisations are up,
 * signed with each key (Nix's Realisation::sign): as Nix <= 2.34 reads it, and where its derivation is known
 * (`known.derivations`, by id) as Nix 2.35 does, its build trace, with the build log also under that derivation (Nix
 * keeps it under the resolved one, the output's deriver; a user has the one written). A realisation whose output
 * failed is left out, and so are those that depend on it; one whose output was already in the cache goes up only
 * where it is missing.
 */
async function publishRealisations(
  realisations: readonly Realisation[],
  known: { derivations: ReadonlyMap<string, string>; infos: ReadonlyMap<string, PathInfo> },
  options: PushOptions,
  result: PushResult,
  alreadyInCache: ReadonlySet<string>,
): Promise<void> {
  const { backend, store } = options;
  const published = new Set([...result.uploaded, ...result.repaired]);
  const failedPaths = new Set(result.failed.map((failure) => failure.path));
  const byId = new Map(realisations.map((r) => [r.id, r]));
  const uploads = new Map<string, Promise<void>>();
  const limiter = new Limiter(options.jobs);
  const upload = (realisation: Realisation): Promise<void> => {
    let uploading = uploads.get(realisation.id);
    if (uploading !== undefined) return uploading;
    uploading = (async () => {
      const outPath = `${store.storeDir}/${realisation.outPath}`;
      if (failedPaths.has(outPath)) throw new Error(`its output ${outPath} failed`);
      for (const depId of realisation.dependentRealisations.keys()) {
        const dep = byId.get(depId);
        if (dep !== undefined && depId !== realisation.id) await upload(dep);
      }
      // Skipped where the cache has it, for an output that was there already: a push uploads what is missing.
      const missing = async (key: string) =>
        published.has(outPath) || !alreadyInCache.has(outPath) || !(await backend.exists(key));
      await limiter.run(async () => {
        const key = realisationKey(realisation.id);
        if (await missing(key)) {
          const sigs = await options.signer.sign(realisationFingerprint(realisation));
          const signed = { ...realisation, signatures: [...realisation.signatures, ...sigs] };
          await backend.put(key, Buffer.from(renderRealisation(signed)), 'realisation');
          result.realisations += 1;
        }
        const drvPath = known.derivations.get(realisation.id);
        if (drvPath === undefined) return;
        const outputName = realisation.id.slice(realisation.id.indexOf('!') + 1);
        const trace = { drvPath: basename(drvPath), outputName, outPath: realisation.outPath };
        const traceKey = buildTraceKey(drvPath, outputName);
        if (!(await missing(traceKey))) return;
        const deriver = known.infos.get(outPath)?.deriver;
        if (deriver !== undefined && deriver !== drvPath) await uploadBuildLog(options, deriver, result, drvPath);
        // Nix's own signatures of the realisation sign its old fingerprint: only the signer's go with the trace.
        const signatures = await options.signer.sign(buildTraceFingerprint(trace));
        await backend.put(traceKey, Buffer.from(renderBuildTrace({ ...trace, signatures })), 'realisation');
        result.buildTraces += 1;
      });
    })();
    uploads.set(realisation.id, uploading);
    return uploading;
  };
  await Promise.all(
    realisations.map((realisation) =>
      upload(realisation).catch((err: unknown) => {
        const path = `${store.storeDir}/${realisation.outPath}`;
        if (failedPaths.has(path)) return;
        failedPaths.add(path);
        result.failed.push({
          ...failureOf(path, err),
          message: `the realisation ${realisation.id} of ${path} was not uploaded: ${errorText(err)}`,
        });
      }),
    ),
  );
}

/**
 * The closure without the paths signed by one of `keyNames` (upstream's, which clients substitute from there);
 * `skipped` counts them. Paths that refer to them are still uploaded: only their own narinfo is left out.
 */
function withoutSignedBy(
  infos: Map<string, PathInfo>,
  keyNames: readonly string[],
): Map<string, PathInfo> & { skipped: number } {
  const kept = new Map(
    [...infos].filter(([, info]) => !info.sigs.some((sig) => keyNames.includes(sig.slice(0, sig.indexOf(':'))))),
  );
  return Object.assign(kept, { skipped: infos.size - kept.size });
}

/**
 * Uploads `paths` (NAR, then narinfo after its references'), adding to `result` and `published`. Returns the
 * NAR key of every path published.
 */
async function publishPaths(
  paths: readonly PathInfo[],
  options: PushOptions,
  progress: PushProgress,
  result: PushResult,
  published: string[],
  onPublished: (path: string) => void = () => undefined,
): Promise<Map<string, string>> {
  const { backend } = options;
  const narKeys = new Map<string, string>();
  const inFlight = new Limiter(options.jobs * PATHS_IN_FLIGHT_PER_JOB);
  const compressing = new Limiter(options.jobs);
  const largeLimiter = new Limiter(LARGE_NARS_AT_ONCE);
  // A cache that is down fails every path: after a few cache-wide failures in a row, with none published in
  // between, no new path starts. A flaky one fails some, and the paths in between go on.
  let cacheFailure: CachectlError | undefined;
  let cacheFailuresInARow = 0;
  const publishing = new Map<string, Promise<void>>();
  // Outputs of one derivation share its log: it goes up once.
  const logsUploading = new Map<string, Promise<void>>();
  const uploadLog = (drvPath: string): Promise<void> => {
    let uploading = logsUploading.get(drvPath);
    if (uploading === undefined) {
      uploading = uploadBuildLog(options, drvPath, result);
      logsUploading.set(drvPath, uploading);
    }
    return uploading;
  };
  const publish = async (info: PathInfo): Promise<void> => {
    const upload = async () => {
      if (cacheFailure !== undefined) throw cacheFailure;
      options.signal?.throwIfAborted();
      // The log and the listing, like the NAR, go up before the narinfo that makes the path visible: all
      // three at once.
      const [nar] = await Promise.all([
        uploadNar(backend, info, {
          compression: options.compression,
          withListing: options.narListing,
          compressing,
          onNarBytes: (bytes) => (progress.narBytesDone += bytes),
        }),
        info.deriver === undefined ? undefined : uploadLog(info.deriver),
      ]);
      return nar;
    };
    // A large NAR takes a large slot instead of an in-flight one: small NARs are not held up by it, nor it by
    // the queue of small ones (it may be what many of them refer to).
    const nar = await (info.narSize > LARGE_NAR_BYTES ? largeLimiter : inFlight).run(upload);
    // Published once its references are (written meanwhile on file://: a chain then waits on renames alone).
    const referencesPublished = Promise.all(
      info.references.filter((ref) => ref !== info.path).flatMap((ref) => publishing.get(ref) ?? []),
    );
    referencesPublished.catch(() => undefined); // seen by the put; not unhandled if the put fails first
    const narInfo = makeNarInfo(info, nar);
    narInfo.sigs.push(
      ...(await options.signer.sign(fingerprint(info.path, info.narHash, nar.narSize, info.references))),
    );
    await backend.put(narInfoKey(hashPartOf(info.path)), Buffer.from(renderNarInfo(narInfo)), 'narinfo', {
      after: referencesPublished,
    });
    narKeys.set(info.path, nar.key);
    published.push(info.path);
    result.narBytes += nar.narSize;
    result.fileBytes += nar.fileSize;
    cacheFailuresInARow = 0;
  };
  const durable: Promise<void>[] = [];
  for (const info of uploadOrder(paths)) {
    const done = publish(info).catch((err: unknown) => {
      if (isCacheWide(err) && (cacheFailuresInARow += 1) >= CACHE_DOWN_FAILURES) cacheFailure ??= err;
      const failure: PushFailure =
        err instanceof DependencyFailed
          ? {
              ...err.failure,
              path: info.path,
              code: 'DEPENDENCY_FAILED',
              message: `not published: ${err.failure.path} in its closure failed: ${err.failure.message}`,
            }
          : failureOf(info.path, err);
      result.failed.push(failure);
      throw new DependencyFailed(err instanceof DependencyFailed ? err.failure : failure);
    });
    done.catch(() => undefined).finally(() => (progress.pathsDone += 1));
    publishing.set(info.path, done);
    // Its dependents go up once it can be read; it counts as published once it is on disk. A flush that fails
    // fails the push at its last one (pushClosures).
    durable.push(
      done
        .then(() => backend.flush())
        .then(
          () => {
            onPublished(info.path);
          },
          () => undefined,
        ),
    );
  }
  await Promise.all(durable);
  return narKeys;
}

/**
 * The order NARs start in: by the length of the chain of narinfos that must follow each path's (its dependents'
 * in `paths`, each published after its references'), longest first, then largest first. A narinfo is a round trip
 * after its references': from a far-away server a deep closure's narinfos take as long as its NARs, so the bottom
 * layers go first and their narinfos go up while the NARs above are still uploading.
 */
export function uploadOrder(paths: readonly PathInfo[]): PathInfo[] {
  const inPush = new Set(paths.map((info) => info.path));
  // References among the paths pushed, self-references left out: the narinfos that must go up first.
  const refsOf = new Map(
    paths.map((info) => [info.path, info.references.filter((ref) => ref !== info.path && inPush.has(ref))]),
  );
  const dependentsLeft = new Map(paths.map((info) => [info.path, 0]));
  for (const refs of refsOf.values())
    for (const ref of refs) dependentsLeft.set(ref, (dependentsLeft.get(ref) ?? 0) + 1);
  // From the top (no dependents) down: a path's height is known once all its dependents' are.
  const height = new Map<string, number>();
  const ready = paths.filter((info) => dependentsLeft.get(info.path) === 0).map((info) => info.path);
  for (const path of ready) height.set(path, 0);
  while (ready.length > 0) {
    const path = ready.pop() as string;
    for (const ref of refsOf.get(path) ?? []) {
      height.set(ref, Math.max(height.get(ref) ?? 0, (height.get(path) ?? 0) + 1));
      const left = (dependentsLeft.get(ref) ?? 0) - 1;
      dependentsLeft.set(ref, left);
      if (left === 0) ready.push(ref);
    }
  }
  const heightOf = (info: PathInfo) => height.get(info.path) ?? 0;
  return [...paths].sort((a, b) => heightOf(b) - heightOf(a) || b.narSize - a.narSize);
}

/**
 * Uploads the log Nix kept of building `drvPath` to `log/<drv base name>` (of `underDrv`, when that differs: the
 * derivation a content-addressed one was resolved from), if it kept one.
 */
async function uploadBuildLog(
  options: PushOptions,
  drvPath: string,
  result: PushResult,
  underDrv = drvPath,
): Promise<void> {
  const log = options.store.buildLog(drvPath);
  if (log === undefined) return;
  // Stored as plain text: Nix reads a file:// log as it is, and an HTTP one through its Content-Type alone.
  const key = logKey(underDrv);
  if (log.fileBytes <= (log.compressed ? SMALL_COMPRESSED_LOG_BYTES : SMALL_LOG_BYTES)) {
    // Most logs: read whole and sent in one request, which the backend retries (a stream it cannot).
    const chunks: Buffer[] = [];
    for await (const chunk of readBuildLog(log)) chunks.push(chunk);
    await options.backend.put(key, Buffer.concat(chunks), 'log');
  } else {
    const sizeHint = log.compressed ? log.fileBytes * 20 : log.fileBytes;
    await options.backend.putStream(key, readBuildLog(log), 'log', sizeHint);
  }
  result.logs += 1;
}

/** The report of `path` failing with `err` itself (not through a reference). */
export function failureOf(path: string, err: unknown): PushFailure {
  const code = err instanceof CachectlError ? err.code : 'INTERNAL';
  return {
    path,
    code,
    message: errorText(err),
    rootCode: code,
    // an unexpected error may well be passing: worth another try
    retryable: err instanceof CachectlError ? err.retryable : true,
    ...(err instanceof CachectlError && err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
  };
}

/** What a path's failure means for the paths that reference it: carries the original failure along. */
class DependencyFailed extends Error {
  constructor(readonly failure: PushFailure) {
    super(`not published: its reference ${failure.path} failed`);
  }
}
