import type { CacheUrl } from '../core/cache-url.js';
import type { CacheBackend } from './backend.js';
import { FileBackend } from './file.js';
import { S3Backend } from './s3.js';

export function openCache(url: CacheUrl): CacheBackend {
  return url.kind === 'file' ? new FileBackend(url.dir) : new S3Backend(url);
}
