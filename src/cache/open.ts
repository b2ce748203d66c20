import type { CacheUrl } from '../core/cache-url.js';
import type { CacheBackend } from './backend.js';
import { FileBackend } from './file.js';

/**
 * Opens the cache a URL names. The AWS SDK (~0.3 s to load) is loaded only for s3:// caches. Once `signal`
 * aborts, every request in flight stops and every new one fails: nothing half-written is published.
 */
export async function openCache(url: CacheUrl, signal?: AbortSignal): Promise<CacheBackend> {
  if (url.kind === 'file') return new FileBackend(url.dir, signal);
  const { S3Backend } = await import('./s3.js');
  return new S3Backend(url, signal);
}
