import { isAbsolute, normalize } from 'node:path';
import { parseDuration } from './duration.js';
import { CachectlError } from './errors.js';

export interface FileCacheUrl {
  kind: 'file';
  dir: string;
  /**
   * whether each file is flushed to disk before it is renamed into place, and its directory after: what makes a
   * narinfo appear after a power loss only with its NAR and listing (`?fsync=false`: a scratch cache)
   */
  fsync: boolean;
}

export interface S3CacheUrl {
  kind: 's3';
  bucket: string;
  /** full URL with scheme; undefined means AWS itself */
  endpoint?: string;
  region: string;
  /** key prefix, empty or ending in '/' */
  prefix: string;
  profile?: string;
  forcePathStyle: boolean;
  /** checksum headers: only where required for S3-compatible servers, which mishandle the others */
  checksums: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';
  /** how long a request may go without progress before it is abandoned and tried again */
  requestTimeoutMs: number;
}

export type CacheUrl = FileCacheUrl | S3CacheUrl;

const S3_PARAMS = [
  'endpoint',
  'region',
  'prefix',
  'scheme',
  'profile',
  'addressing-style',
  'checksum',
  'request-timeout',
];
/** Long enough for a 5 MiB part over a slow link; a stalled connection costs at most this. */
const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;
const EXAMPLES = 'expected file:///DIR or s3://BUCKET?endpoint=URL&region=R&prefix=P';

/**
 * Parses the cache URL of `--to`. s3 URLs take Nix's own parameters (endpoint, region, scheme, profile)
 * plus prefix, addressing-style (path|virtual), checksum (when-required|when-supported) and request-timeout.
 */
export function parseCacheUrl(text: string): CacheUrl {
  const fail = (why: string): never => {
    throw new CachectlError('CACHE_URL_INVALID', `cache URL ${JSON.stringify(text)} ${why}; ${EXAMPLES}`);
  };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail('is not a URL');
  }
  if (url.protocol === 'file:') {
    if (url.host !== '') fail('must be file:///ABSOLUTE/DIR without a host');
    for (const [name, value] of url.searchParams) {
      if (name !== 'fsync') fail(`has the unknown parameter ${name} (known: fsync)`);
      if (value !== 'true' && value !== 'false') fail(`has fsync=${value}: use fsync=true (the default) or false`);
    }
    const dir = normalize(decodeURIComponent(url.pathname)).replace(/\/+$/, '');
    if (!isAbsolute(dir) || dir === '') fail('must name an absolute directory other than /');
    return { kind: 'file', dir, fsync: url.searchParams.get('fsync') !== 'false' };
  }
  if (url.protocol !== 's3:') return fail(`has the unsupported scheme ${url.protocol}`);
  const bucket = url.host;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) fail(`has no valid bucket name (3-63 of a-z 0-9 . -)`);
  if (url.pathname !== '' && url.pathname !== '/') fail('has a path; put a key prefix in ?prefix=');
  for (const name of url.searchParams.keys()) {
    if (!S3_PARAMS.includes(name)) fail(`has the unknown parameter ${name} (known: ${S3_PARAMS.join(', ')})`);
  }
  const param = (name: string): string | undefined => url.searchParams.get(name) ?? undefined;
  const result: S3CacheUrl = {
    kind: 's3',
    bucket,
    region: param('region') ?? 'us-east-1',
    prefix: (param('prefix') ?? '').replace(/^\/+|\/+$/g, ''),
    forcePathStyle: true,
    checksums: 'WHEN_REQUIRED',
    requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
  };
  if (result.prefix !== '') {
    if (result.prefix.split('/').some((part) => part === '' || part === '.' || part === '..')) {
      fail('has a prefix with empty, . or .. segments');
    }
    result.prefix += '/';
  }
  const endpoint = param('endpoint');
  if (endpoint !== undefined) {
    const scheme = param('scheme') ?? 'https';
    if (scheme !== 'http' && scheme !== 'https') fail('has a scheme other than http or https');
    result.endpoint = /^https?:\/\//.test(endpoint) ? endpoint.replace(/\/+$/, '') : `${scheme}://${endpoint}`;
    try {
      new URL(result.endpoint);
    } catch {
      fail(`has an endpoint ${JSON.stringify(endpoint)} that is not host[:port] or a URL`);
    }
  }
  const style = param('addressing-style') ?? (endpoint === undefined ? 'virtual' : 'path');
  if (style !== 'path' && style !== 'virtual') fail('has an addressing-style other than path or virtual');
  result.forcePathStyle = style === 'path';
  const checksum = param('checksum') ?? (endpoint === undefined ? 'when-supported' : 'when-required');
  if (checksum !== 'when-required' && checksum !== 'when-supported') {
    fail('has a checksum other than when-required or when-supported');
  }
  result.checksums = checksum === 'when-required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
  const timeout = param('request-timeout');
  if (timeout !== undefined) {
    try {
      result.requestTimeoutMs = parseDuration(timeout, 'request-timeout');
    } catch {
      fail('has a request-timeout that is not a duration like 30s or 2m');
    }
    if (result.requestTimeoutMs < 100) fail('has a request-timeout under 100ms');
  }
  const profile = param('profile');
  if (profile !== undefined) result.profile = profile;
  return result;
}

/** How messages name a cache: bucket, prefix and endpoint, never credentials. */
export function displayCacheUrl(url: CacheUrl): string {
  if (url.kind === 'file') return `file://${url.dir}`;
  return `s3://${url.bucket}/${url.prefix}${url.endpoint === undefined ? '' : ` at ${url.endpoint}`}`;
}
