/**
 * `cachectl verify --repair`: what verify found broken, uploaded again from the local store through the same push
 * as `cachectl push` (NAR, then narinfo after its references, under a lease the GC respects), so the closure
 * invariant holds throughout. A broken path present in the cache is overwritten in place: its narinfo is
 * rewritten last, after its new NAR. A realisation or build trace whose signature fails is signed again in place.
 * What the local store does not have is named, not guessed at.
 */
import { errorText } from '../core/errors.js';
import {
  buildTraceFingerprint,
  parseBuildTrace,
  parseRealisation,
  realisationFingerprint,
  renderBuildTrace,
  renderRealisation,
} from '../core/realisation.js';
import { type PublicKey, verifySignature } from '../core/signing.js';
import type { Signer } from '../upload/signer.js';
import { hashPartOf } from '../core/store-path.js';
import type { Compression } from '../core/narinfo.js';
import type { CacheBackend } from '../cache/backend.js';
import { buildTraceOf, narInfoKey } from '../cache/layout.js';
import { RootReader } from '../gc/roots.js';
import type { LeaseWriter } from '../gc/lease.js';
import type { LocalStore } from '../nix/local-store.js';
import { ensureCacheInfo, pushClosures } from '../upload/push.js';
import type { Problem, ProblemKind } from './verify.js';

export interface RepairOptions {
  backend: CacheBackend;
  store: LocalStore;
  lease: LeaseWriter;
  signer: Signer;
  trustedKeys: readonly PublicKey[];
  compression: Compression;
  narListing: boolean;
  jobs: number;
}

export interface RepairResult {
  /** store paths uploaded (again) */
  uploaded: string[];
  /** objects deleted: orphan listings */
  deleted: string[];
  /** realisations signed again (their keys) */
  resigned: string[];
  /** what could not be repaired, and why */
  unrepaired: { key: string; path?: string; why: string }[];
}

/** Problems fixed by uploading the path again. */
const REUPLOADED: ReadonlySet<ProblemKind> = new Set([
  'narinfo-malformed',
  'nar-missing',
  'nar-size-mismatch',
  'nar-corrupt',
  'file-hash-mismatch',
  'nar-hash-mismatch',
  'signature-invalid',
  'signature-untrusted',
  'signature-invalid-beside-valid',
  'content-addressed-unsigned',
  'listing-malformed',
  'realisation-output-missing',
]);
/** Problems fixed by signing again: a narinfo's by uploading its path again, a realisation's in place. */
const SIGNATURE_KINDS: ReadonlySet<ProblemKind> = new Set([
  'signature-invalid',
  'signature-untrusted',
  'signature-invalid-beside-valid',
  'content-addressed-unsigned',
  'realisation-signature-invalid',
  'realisation-signature-untrusted',
]);
const REALISATION_SIGNATURE_KINDS: ReadonlySet<ProblemKind> = new Set([
  'realisation-signature-invalid',
  'realisation-signature-untrusted',
]);

export async function repairCache(problems: readonly Problem[], options: RepairOptions): Promise<RepairResult> {
  const { backend, store } = options;
  const result: RepairResult = { uploaded: [], deleted: [], resigned: [], unrepaired: [] };
  const unrepaired = (problem: Problem, why: string) =>
    result.unrepaired.push({ key: problem.key, ...(problem.path === undefined ? {} : { path: problem.path }), why });

  // A signature is repaired only by signing with a key the readers trust.
  const canSign = options.signer.publicKeys.some((key) =>
    options.trustedKeys.some((trusted) => trusted.name === key.name && Buffer.from(trusted.key).equals(key.key)),
  );

  // The problems each path is uploaded for: again where the cache has it (`reupload`), or because it lacks it.
  const reupload = new Map<string, Problem[]>();
  const upload = new Map<string, Problem[]>();
  const add = (paths: Map<string, Problem[]>, path: string, problem: Problem) =>
    paths.set(path, [...(paths.get(path) ?? []), problem]);
  const byHashPart = new Map<string, Problem>();
  const orphanListings: Problem[] = [];
  const realisationsToSign: Problem[] = [];
  for (const problem of problems) {
    if (problem.kind === 'cache-info-missing') continue; // written below, as by every push
    if (problem.kind === 'listing-orphan') orphanListings.push(problem);
    else if (problem.kind === 'reference-missing' && problem.reference !== undefined)
      add(upload, `${store.storeDir}/${problem.reference}`, problem);
    else if (SIGNATURE_KINDS.has(problem.kind) && !canSign)
      unrepaired(
        problem,
        'no --secret-key-file or --signer-command whose key is among --trusted-public-key to sign it with',
      );
    else if (REALISATION_SIGNATURE_KINDS.has(problem.kind)) realisationsToSign.push(problem);
    else if (problem.kind === 'narinfo-malformed') byHashPart.set(problem.key.slice(0, 32), problem);
    else if (REUPLOADED.has(problem.kind) && problem.path !== undefined) {
      // A realisation whose output is missing is whole again once the output is up.
      add(problem.kind === 'realisation-output-missing' ? upload : reupload, problem.path, problem);
    } else unrepaired(problem, 'cachectl cannot make it again: delete it (cachectl gc collects what nothing needs)');
  }
  for (const path of store.queryPathsByHashPart([...byHashPart.keys()])) {
    add(reupload, path, byHashPart.get(hashPartOf(path)) as Problem);
    byHashPart.delete(hashPartOf(path));
  }
  for (const problem of byHashPart.values()) unrepaired(problem, 'no path of its hash is in the local store');

  const wanted = new Map(
    [...upload, ...reupload].map(([path]) => [path, [...(upload.get(path) ?? []), ...(reupload.get(path) ?? [])]]),
  );
  const valid = store.queryPathInfos([...wanted.keys()]);
  for (const [path, pathProblems] of wanted) {
    if (valid.has(path)) continue;
    for (const problem of pathProblems)
      unrepaired(problem, `${path} is not in the local store (build or substitute it, then run --repair again)`);
    wanted.delete(path);
  }
  await ensureCacheInfo(backend, store.storeDir);
  if (wanted.size > 0) {
    const pushed = await pushClosures([...wanted.keys()], {
      backend,
      store,
      compression: options.compression,
      // A broken listing is repaired by a new one.
      narListing: options.narListing || [...wanted.values()].flat().some((p) => p.kind === 'listing-malformed'),
      signer: options.signer,
      jobs: options.jobs,
      lease: options.lease,
      reupload: new Set(reupload.keys()),
    });
    result.uploaded.push(...pushed.uploaded, ...pushed.repaired);
    for (const failure of pushed.failed) {
      const pathProblems = wanted.get(failure.path) ?? [];
      const keys = pathProblems.length > 0 ? pathProblems.map((p) => p.key) : [narInfoKey(hashPartOf(failure.path))];
      for (const key of keys) result.unrepaired.push({ key, path: failure.path, why: failure.message });
    }
  }
  await signRealisationsAgain(realisationsToSign, options, result, unrepaired);
  await deleteOrphanListings(backend, orphanListings, result);
  return result;
}

/**
 * Signs realisations and build traces again, in place: the signer's signatures replace its own old ones and any
 * by a trusted key that do not verify; the others (foreign keys, trusted ones that verify) are kept.
 */
async function signRealisationsAgain(
  problems: readonly Problem[],
  options: RepairOptions,
  result: RepairResult,
  unrepaired: (problem: Problem, why: string) => void,
): Promise<void> {
  const { backend, signer, trustedKeys } = options;
  const ownNames = new Set(signer.publicKeys.map((key) => key.name));
  const trustedNames = new Set(trustedKeys.map((key) => key.name));
  const nameOf = (sig: string) => sig.slice(0, sig.indexOf(':'));
  for (const problem of problems) {
    try {
      const body = await backend.get(problem.key);
      if (body === undefined) {
        unrepaired(problem, 'it is gone from the cache');
        continue;
      }
      const signed = signedObject(problem.key, body.toString('utf8'));
      const kept = signed.signatures.filter((sig) => {
        const name = nameOf(sig);
        return !ownNames.has(name) && (!trustedNames.has(name) || verifySignature(trustedKeys, signed.text, sig));
      });
      const signatures = [...kept, ...(await signer.sign(signed.text))];
      await backend.put(problem.key, Buffer.from(signed.render(signatures)), 'realisation');
      result.resigned.push(problem.key);
    } catch (err) {
      unrepaired(problem, errorText(err));
    }
  }
  // repaired: on disk
  await backend.flush();
}

/** A realisation or build trace at `key`: what its signatures sign, them, and its text with others instead. */
function signedObject(
  key: string,
  text: string,
): { text: string; signatures: string[]; render(signatures: string[]): string } {
  const trace = buildTraceOf(key);
  if (trace !== undefined) {
    const parsed = parseBuildTrace(text, trace, key);
    return {
      text: buildTraceFingerprint(parsed),
      signatures: parsed.signatures,
      render: (signatures) => renderBuildTrace({ ...parsed, signatures }),
    };
  }
  const parsed = parseRealisation(text, key);
  return {
    text: realisationFingerprint(parsed),
    signatures: parsed.signatures,
    render: (signatures) => renderRealisation({ ...parsed, signatures }),
  };
}

/**
 * Deletes listings that belong to no narinfo, read again just before: a writer puts a path's listing before its
 * narinfo, under a lease written before both, so a listing whose path a live lease names, or whose narinfo is
 * there now, is left alone. A writer that starts meanwhile may lose its listing; a reader then loses only time
 * (Nix reads the NAR instead).
 */
async function deleteOrphanListings(
  backend: CacheBackend,
  listings: readonly Problem[],
  result: RepairResult,
): Promise<void> {
  if (listings.length === 0) return;
  const { leased } = await new RootReader(backend).read(Date.now());
  const orphans: string[] = [];
  for (const { key } of listings) {
    const hashPart = key.slice(0, 32);
    if (leased.has(hashPart) || (await backend.exists(narInfoKey(hashPart)))) continue;
    orphans.push(key);
  }
  try {
    if (orphans.length > 0) await backend.delete(orphans);
    result.deleted.push(...orphans);
  } catch (err) {
    for (const key of orphans) result.unrepaired.push({ key, why: `cannot delete it: ${errorText(err)}` });
  }
}
