import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend } from '../../src/cache/backend.js';
import { LEASES_PREFIX } from '../../src/cache/layout.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { nix32Encode } from '../../src/core/nix32.js';

/**
 * Every way a reader could see a broken cache: a narinfo that does not parse, whose NAR is missing or not of
 * its FileSize, or one of whose references has no narinfo. Returns the problems found (none is the only good
 * answer) and the number of narinfos seen.
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
          problems.push(
            `${(err as Error).message} (${text.length} bytes: ${JSON.stringify(text.toString('utf8').slice(-40))})`,
          );
          break;
        }
        await sleep(50);
      }
    }
    if (info === undefined) continue;
    const found: string[] = [];
    if (!(await backend.exists(info.url))) found.push(`${key}: its NAR ${info.url} is missing`);
    else if (info.fileSize !== undefined && narSizes.has(info.url) && narSizes.get(info.url) !== info.fileSize) {
      found.push(`${key}: its NAR ${info.url} has ${narSizes.get(info.url)} bytes, not FileSize ${info.fileSize}`);
    }
    for (const ref of info.references) {
      if (!(await backend.exists(`${ref.slice(0, 32)}.narinfo`))) found.push(`${key}: its reference ${ref} is missing`);
    }
    // A GC deletes a narinfo before its NAR and referrers before what they refer to; if this narinfo went too while
    // it was being checked, the checks saw two moments, not a broken cache.
    if (found.length > 0 && (await backend.exists(key))) problems.push(...found);
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

/**
 * A chain of `length` synthetic narinfos (`/nix/store/HASH-NAME-N`), each referring to the next, so a GC deletes
 * them one layer (one request) at a time, each with a 3-byte NAR. Returns every key written.
 */
export async function putNarInfoChain(backend: CacheBackend, name: string, length: number): Promise<string[]> {
  const hash = (i: number) => nix32Encode(Buffer.from(`${name}-${String(i).padStart(19, '0')}`)).slice(0, 32);
  const narHash = (i: number) => nix32Encode(Buffer.alloc(32, i % 256)).slice(0, 52);
  const keys: string[] = [];
  for (let i = 0; i < length; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, length - i) }, async (_, j) => {
        const n = i + j;
        const nar = `nar/${narHash(n)}${n}.nar`;
        const ref = n + 1 < length ? `${hash(n + 1)}-${name}-${n + 1}` : '';
        await backend.put(nar, Buffer.from('nar'), 'nar');
        await backend.put(
          `${hash(n)}.narinfo`,
          Buffer.from(
            `StorePath: /nix/store/${hash(n)}-${name}-${n}\nURL: ${nar}\nCompression: none\nNarHash: ` +
              `sha256:${narHash(n)}\nNarSize: 3\nReferences: ${ref}\n`,
          ),
          'narinfo',
        );
        keys.push(nar, `${hash(n)}.narinfo`);
      }),
    );
  }
  return keys;
}

/** Every key of a cache, at any depth. */
export async function allKeys(backend: CacheBackend): Promise<string[]> {
  const keys: string[] = [];
  for await (const page of backend.list('', { deep: true })) keys.push(...page.map((entry) => entry.key));
  return keys.sort();
}

/** Forgets the writers' leases, as if they had expired: what they pushed is then protected by age alone. */
export async function dropLeases(backend: CacheBackend): Promise<void> {
  for await (const page of backend.list(LEASES_PREFIX)) await backend.delete(page.map((entry) => entry.key));
}
