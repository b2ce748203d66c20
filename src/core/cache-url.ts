import { isAbsolute, normalize } from 'node:path';
import { parseDuration } from './duration.js';
import { CachectlError } from './errors.js';

export interface FileCacheUrl {
  kind: 'file';
  dir: string;
  /**
   * whether the file system is flushed (syncfs) before a narinfo is renamed into place and before a push ends: what
   * makes a narinfo appear after a power loss only with its NAR and listing (`?fsync=false`: a scratch cache)
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
const EXAMPLES = 'expected file:///DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R';

/**
 * Parses the cache URL of `--to`. s3 URLs are Nix's own: the key prefix is the path (`?prefix=` is taken too, as
 * cachectl's older spelling), with Nix's parameters (endpoint, region, scheme, profile, addressing-style:
 * auto|path|virtual) and cachectl's own (checksum: when-required|when-supported, request-timeout).
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
  for (const name of url.searchParams.keys()) {
    if (!S3_PARAMS.includes(name)) fail(`has the unknown parameter ${name} (known: ${S3_PARAMS.join(', ')})`);
  }
  const param = (name: string): string | undefined => url.searchParams.get(name) ?? undefined;
  const trimSlashes = (text: string) => text.replace(/^\/+|\/+$/g, '');
  // From the text itself: the URL parser would resolve a `..` segment away instead of refusing it.
  let pathPrefix: string;
  try {
    pathPrefix = trimSlashes(decodeURIComponent(/^s3:\/\/[^/?#]*([^?#]*)/i.exec(text)?.[1] ?? ''));
  } catch {
    return fail('has a path that is not percent-encoded properly');
  }
  const paramPrefix = trimSlashes(param('prefix') ?? '');
  if (pathPrefix !== '' && paramPrefix !== '' && pathPrefix !== paramPrefix) {
    fail(
      `names two prefixes, ${pathPrefix} in its path and ${paramPrefix} in ?prefix=; keep the path, as Nix reads it`,
    );
  }
  const result: S3CacheUrl = {
    kind: 's3',
    bucket,
    region: param('region') ?? 'us-east-1',
    prefix: pathPrefix === '' ? paramPrefix : pathPrefix,
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
  // auto, Nix's default: virtual-hosted on AWS, path-style on another endpoint
  const style = param('addressing-style') ?? 'auto';
  if (style !== 'auto' && style !== 'path' && style !== 'virtual')
    fail('has an addressing-style other than auto, path or virtual');
  result.forcePathStyle = style === 'path' || (style === 'auto' && endpoint !== undefined);
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

/**
 * The cache's URL as Nix reads it, for clients' `substituters` and for every message and report that names the
 * cache: Nix's S3 form with the prefix as its path and only the parameters Nix knows (none of cachectl's own,
 * never a credential). What the defaults give is left out.
 */
export function nixCacheUrl(url: CacheUrl): string {
  if (url.kind === 'file') return `file://${url.dir}`;
  const params: [string, string][] = [];
  if (url.endpoint !== undefined) params.push(['endpoint', url.endpoint]);
  if (url.region !== 'us-east-1') params.push(['region', url.region]);
  if (url.profile !== undefined) params.push(['profile', url.profile]);
  // Nix's auto: path-style exactly when an endpoint is given
  if (url.forcePathStyle !== (url.endpoint !== undefined))
    params.push(['addressing-style', url.forcePathStyle ? 'path' : 'virtual']);
  // A URL's query may hold ':' and '/' as they are, which keeps an endpoint readable.
  const value = (text: string) => encodeURIComponent(text).replace(/%3A/g, ':').replace(/%2F/g, '/');
  const query = params.map(([name, text]) => `${name}=${value(text)}`).join('&');
  const prefix = url.prefix
    .split('/')
    .filter((segment) => segment !== '')
    .map((segment) => `/${encodeURIComponent(segment)}`)
    .join('');
  return `s3://${url.bucket}${prefix}${query === '' ? '' : `?${query}`}`;
}
