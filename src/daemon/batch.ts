import type { Logger } from 'pino';
import type { Compression } from '../core/narinfo.js';
import type { Signer } from '../upload/signer.js';
import type { CacheBackend } from '../cache/backend.js';
import type { LeaseWriter } from '../gc/lease.js';
import type { LocalStore } from '../nix/local-store.js';
import type { Paths } from '../queue/paths.js';
import {
  ensureCacheInfo,
  failureOf,
  newProgress,
  pushClosures,
  type PushFailure,
  type PushResult,
} from '../upload/push.js';
import type { Counters } from './counters.js';
import type { Intake } from './intake.js';
import type { LocalRoots } from './local-roots.js';
import { isSharedTrouble, type Trouble } from './policy.js';
import type { BatchOutcome, UploaderWork } from './uploader.js';

/** Root paths claimed at once; their closures upload together. */
const BATCH_PATHS = 64;
/** How long a published root may wait to be marked done with others (a crash meanwhile only uploads it again). */
const COMPLETE_EVERY_MS = 100;

export interface RootFailure extends Trouble {
  retryable: boolean;
}

export interface PushOutcome extends BatchOutcome {
  failures: ReadonlyMap<string, RootFailure>;
  /** the push of the roots still in the local store, when it ran */
  push?: PushResult;
  /** roots handed to the push (those still in the local store) */
  pushedRoots: number;
  /** why the batch failed as a whole, when it did */
  batchError?: string;
  ms: number;
}

export interface BatchWorkOptions {
  paths: Paths;
  intake: Intake;
  localRoots: LocalRoots;
  counters: Counters;
  backend: CacheBackend;
  store: LocalStore;
  lease: LeaseWriter;
  signer: Signer;
  compression: Compression;
  narListing: boolean;
  skipSignedBy: readonly string[];
  /** how long a claim holds before another start may take the path back */
  leaseMs: number;
  log: Logger;
  now: () => number;
}

/** The daemon's work for the uploader: the queue's paths pushed with the push pipeline. */
export function batchWork(options: BatchWorkOptions): UploaderWork<PushOutcome> {
  const { paths, counters, log, now } = options;
  return {
    ready: () => ensureCacheInfo(options.backend, options.store.storeDir),
    takeIn: () => {
      options.intake.takeIn();
    },
    claim: () => paths.claim(BATCH_PATHS, options.leaseMs),
    upload: (roots, jobs, signal) => pushBatch(options, roots, jobs, signal),
    release: (roots) => {
      paths.release(roots);
    },
    nextDueAt: () => paths.nextDueAt(),
    record(_roots, outcome, resumeAt) {
      paths.complete(outcome.uploadedRoots);
      options.localRoots.release(outcome.uploadedRoots);
      const { push } = outcome;
      if (push !== undefined) {
        counters.uploaded(
          {
            paths: push.uploaded.length + push.repaired.length,
            narBytes: push.narBytes,
            fileBytes: push.fileBytes,
            seconds: outcome.ms / 1000,
          },
          now(),
        );
        log.info(
          {
            roots: outcome.pushedRoots,
            uploaded: push.uploaded.length,
            repaired: push.repaired.length,
            present: push.alreadyPresent,
            narBytes: push.narBytes,
            ms: outcome.ms,
          },
          'uploaded',
        );
      }
      for (const [root, failure] of outcome.failures) {
        counters.failed(failure.code);
        const error = { code: failure.code, message: failure.message };
        if (resumeAt !== undefined && isSharedTrouble(failure.code)) {
          // Not the path's fault: back in line for when the pause ends, no try used up.
          paths.release([root], resumeAt, error);
          continue;
        }
        const state = paths.fail(root, error, failure.retryable);
        if (state === 'pending') counters.retried();
        log[state === 'failed' ? 'error' : 'warn'](
          { storePath: root, code: failure.code, err: failure.message, state },
          'upload failed',
        );
      }
      if (outcome.batchError !== undefined && resumeAt === undefined) {
        log.error({ err: outcome.batchError }, 'batch failed');
      }
    },
  };
}

/** Pushes the closures of the roots still in the local store; the others fail for good. */
async function pushBatch(
  options: BatchWorkOptions,
  roots: readonly string[],
  jobs: number,
  signal: AbortSignal,
): Promise<PushOutcome> {
  const { paths, now } = options;
  const started = now();
  const failures = new Map<string, RootFailure>();
  const renew = setInterval(() => {
    paths.renewLeases(roots, options.leaseMs);
  }, options.leaseMs / 3);
  try {
    const valid = options.store.queryPathInfos(roots);
    for (const root of roots.filter((r) => !valid.has(r))) {
      failures.set(root, {
        code: 'PATH_NOT_VALID',
        message:
          `${root} is no longer in the local Nix store (deleted before it was uploaded); build it again, ` +
          `then run cachectl retry`,
        retryable: false,
      });
    }
    const validRoots = roots.filter((r) => valid.has(r));
    if (validRoots.length === 0)
      return { failures, completed: false, uploadedRoots: [], pushedRoots: 0, ms: now() - started };
    // Done soon after it is published (a root that waited for the rest of its batch would be blamed for a crash
    // after it); those published within COMPLETE_EVERY_MS in one transaction, as each commit waits for the disk.
    let published: string[] = [];
    const completePublished = () => {
      const done = published;
      published = [];
      if (done.length === 0) return;
      try {
        paths.complete(done);
        options.localRoots.release(done);
      } catch (err) {
        // the end of the batch completes them again, or the loop's disk-trouble pause takes over
        options.log.warn({ storePaths: done, err }, 'could not mark uploaded paths done yet');
      }
    };
    const onRootPublished = (root: string) => {
      if (published.push(root) === 1) setTimeout(completePublished, COMPLETE_EVERY_MS);
    };
    const { backend, store, compression, narListing, signer, skipSignedBy, lease } = options;
    const push = await pushClosures(validRoots, {
      backend,
      store,
      compression,
      narListing,
      signer,
      skipSignedBy,
      jobs,
      progress: newProgress(),
      lease,
      onRootPublished,
      signal,
    });
    completePublished();
    const byPath = new Map(push.failed.map((failure) => [failure.path, failure]));
    for (const root of validRoots) {
      const failure = byPath.get(root);
      if (failure !== undefined) failures.set(root, rootFailure(failure));
    }
    return {
      failures,
      completed: true,
      push,
      uploadedRoots: validRoots.filter((root) => !byPath.has(root)),
      pushedRoots: validRoots.length,
      ms: now() - started,
    };
  } catch (err) {
    // The batch as a whole failed before uploading: the cache, or the local store, is the problem.
    const failure = failureOf(roots[0] ?? '', err);
    for (const root of roots) if (!failures.has(root)) failures.set(root, rootFailure(failure));
    return {
      failures,
      completed: false,
      uploadedRoots: [],
      pushedRoots: 0,
      batchError: failure.message,
      ms: now() - started,
    };
  } finally {
    clearInterval(renew);
  }
}

/** A root's failure as the uploader sees it: what went wrong in the end, a reference's failure included. */
function rootFailure(failure: PushFailure): RootFailure {
  return {
    code: failure.rootCode,
    message: failure.message,
    retryable: failure.retryable,
    retryAfterMs: failure.retryAfterMs,
  };
}
