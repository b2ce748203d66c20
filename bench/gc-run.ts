/**
 * One GC run for bench/gc, in its own process so that its peak RSS is its own: the GC of src/gc with a
 * backend that counts requests. Prints `{ report, requests }` as JSON.
 *
 *   node dist/bench/gc-run.js CACHE_URL METADATA_CACHE [--dry-run] [--grace D]
 */
import { parseArgs } from 'node:util';
import type { CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { parseDuration } from '../src/core/duration.js';
import { collectGarbage } from '../src/gc/gc.js';
import { MetaCache } from '../src/gc/meta-cache.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { 'dry-run': { type: 'boolean', default: false }, grace: { type: 'string', default: '0s' } },
});
const [url, metaFile] = positionals as [string, string];

/** Requests by kind: a listing page, a GET, a HEAD, a PUT, a batched DELETE. */
const requests = { list: 0, get: 0, head: 0, put: 0, delete: 0 };

function counting(backend: CacheBackend): CacheBackend {
  const getMany = backend.getMany?.bind(backend);
  return {
    displayUrl: backend.displayUrl,
    listsByPage: backend.listsByPage,
    releasesStreamChunks: backend.releasesStreamChunks,
    get: (key) => ((requests.get += 1), backend.get(key)),
    getStream: (key) => ((requests.get += 1), backend.getStream(key)),
    // file:// reads narinfos in batches: counted as the reads they are
    ...(getMany === undefined ? {} : { getMany: (keys) => ((requests.get += keys.length), getMany(keys)) }),
    exists: (key) => ((requests.head += 1), backend.exists(key)),
    put: (key, body, type, options) => ((requests.put += 1), backend.put(key, body, type, options)),
    putStream: (key, body, type, size) => ((requests.put += 1), backend.putStream(key, body, type, size)),
    delete: (keys, options) => ((requests.delete += 1), backend.delete(keys, options)),
    flush: () => backend.flush(),
    async *list(prefix, options) {
      for await (const page of backend.list(prefix, options)) {
        requests.list += 1;
        yield page;
      }
    },
    close: () => backend.close(),
  };
}

const backend = counting(await openCache(parseCacheUrl(url)));
const metaCache = MetaCache.open(metaFile);
const report = await collectGarbage({
  backend,
  olderThanMs: 0,
  graceMs: parseDuration(values.grace, '--grace'),
  dryRun: values['dry-run'],
  metaCache,
  jobs: 32,
});
metaCache.close();
await backend.close();
process.stdout.write(`${JSON.stringify({ report, requests })}\n`);
