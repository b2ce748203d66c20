import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend } from '../../src/cache/backend.js';
import { parseNarInfo } from '../../src/core/narinfo.js';

/**
 * Every way a reader could see a broken cache: a narinfo that does not parse, whose NAR is missing or not of
 * its FileSize, or one of whose references has no narinfo. Returns the problems found (none is the only good answer) and the
 * number of narinfos seen.
 */
export async function cacheProblems(backend: CacheBackend): Promise<{ narinfos: number; problems: string[] }> {
  const problems: string[] = [];
  const narInfoKeys: string[] = [];
  for await (const page of backend.list('')) {
    for (const { key } of page) if (key.endsWith('.narinfo')) narInfoKeys.push(key);
  }
  const narSizes = new Map<string, number>();
  for await (const page of backend.list('nar/')) for (const { key, sizeBytes } of page) narSizes.set(key, sizeBytes);
  for (const key of narInfoKeys) {
    let info;
    for (let read = 1; info === undefined; read++) {
      const text = await backend.get(key);
      if (text === undefined) break; // deleted since the listing (not by a push, but tolerate it)
      try {
        info = parseNarInfo(text.toString('utf8'), key);
      } catch (err) {
        // s3rver stores an object's content and its metadata one after the other, so a GET racing a PUT can see
        // them torn (S3 and file:// cannot).
        // A second read tells a torn read from a malformed narinfo.
        if (read === 2) {
          problems.push(`${(err as Error).message} (${text.length} bytes: ${JSON.stringify(text.toString('utf8').slice(-40))})`);
          break;
        }
        await sleep(50);
      }
    }
    if (info === undefined) continue;
    if (!(await backend.exists(info.url))) problems.push(`${key}: its NAR ${info.url} is missing`);
    else if (info.fileSize !== undefined && narSizes.has(info.url) && narSizes.get(info.url) !== info.fileSize) {
      problems.push(`${key}: its NAR ${info.url} has ${narSizes.get(info.url)} bytes, not FileSize ${info.fileSize}`);
    }
    for (const ref of info.references) {
      if (!(await backend.exists(`${ref.slice(0, 32)}.narinfo`))) problems.push(`${key}: its reference ${ref} is missing`);
    }
  }
  return { narinfos: narInfoKeys.length, problems };
}

/** Runs `cacheProblems` over and over until stopped, collecting every problem seen at any moment. */
export function observeCache(backend: CacheBackend): { stop(): Promise<{ rounds: number; problems: string[] }> } {
  let stopped = false;
  let rounds = 0;
  const problems = new Set<string>();
  const loop = (async () => {
    while (!stopped) {
      for (const problem of (await cacheProblems(backend)).problems) problems.add(problem);
      rounds += 1;
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { rounds, problems: [...problems] };
    },
  };
}
