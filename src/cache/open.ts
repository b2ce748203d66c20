import type { CacheUrl } from '../core/cache-url.js';
import type { ObjectHeaders, ObjectKind } from '../core/object-headers.js';
import type { CacheBackend } from './backend.js';
import { FileBackend } from './file.js';

/**
 * Opens the cache a URL names. The AWS SDK (~0.3 s to load) is loaded only for s3:// caches. Once `signal`
 * aborts, every request in flight stops and every new one fails: nothing half-written is published. `headers`
 * are what each kind of object goes up with (on S3; a directory keeps none).
 */
export async function openCache(
  url: CacheUrl,
  options: { signal?: AbortSignal; headers?: Readonly<Record<ObjectKind, ObjectHeaders>> } = {},
): Promise<CacheBackend> {
  if (url.kind === 'file') return new FileBackend(url.dir, options.signal, { fsync: url.fsync });
  const { S3Backend } = await import('./s3.js');
  return new S3Backend(url, options.signal, options.headers);
}
