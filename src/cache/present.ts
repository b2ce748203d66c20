import type { CacheBackend } from './backend.js';
import { narInfoKey, NARINFO_SUFFIX } from './layout.js';
import { mapLimit } from '../core/limit.js';

/** Below this many paths, one HEAD each is cheaper than listing. */
const LIST_FROM_PATHS = 32;
/** A listing page answers up to 1,000 keys; allow one page per this many paths asked about. */
const PATHS_PER_LIST_PAGE = 8;
const HEAD_CONCURRENCY = 16;

/**
 * Which of `hashParts` have a narinfo in the cache. Many paths are answered by listing the cache's top level
 * from the smallest hash on (one request per 1,000 keys), but only for as many pages as HEADs they save; the
 * paths past the last listed key are asked one HEAD each. A backend that does not list by page (file://, which
 * reads its whole directory to list it) is asked one HEAD (a stat) each.
 */
export async function findPresent(backend: CacheBackend, hashParts: readonly string[]): Promise<Set<string>> {
  const sorted = [...new Set(hashParts)].sort();
  const present = new Set<string>();
  let unanswered = sorted;
  if (backend.listsByPage && sorted.length >= LIST_FROM_PATHS) {
    const wanted = new Set(sorted);
    const last = narInfoKey(sorted[sorted.length - 1] as string);
    let pagesLeft = Math.ceil(sorted.length / PATHS_PER_LIST_PAGE);
    let listedUpTo = '';
    let coveredAll = true;
    for await (const page of backend.list('', { startAfter: sorted[0] as string })) {
      for (const { key } of page) {
        if (key.endsWith(NARINFO_SUFFIX)) {
          const hashPart = key.slice(0, -NARINFO_SUFFIX.length);
          if (wanted.has(hashPart)) present.add(hashPart);
        }
        listedUpTo = key;
      }
      if (listedUpTo >= last) break;
      pagesLeft -= 1;
      if (pagesLeft === 0) {
        coveredAll = false;
        break;
      }
    }
    unanswered = coveredAll ? [] : sorted.filter((hashPart) => narInfoKey(hashPart) > listedUpTo);
  }
  await mapLimit(unanswered, HEAD_CONCURRENCY, async (hashPart) => {
    if (await backend.exists(narInfoKey(hashPart))) present.add(hashPart);
  });
  return present;
}
