import { createHash, createHmac } from 'node:crypto';

/** AWS credentials as the SDK's provider chain resolves them. */
export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}

export interface RequestToSign {
  method: string;
  url: URL;
  /** headers to send and sign besides host, x-amz-date, x-amz-content-sha256 and the session token, which are added */
  headers: Record<string, string>;
  body: Buffer;
  region: string;
  credentials: SigningCredentials;
  date: Date;
}

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

/** RFC 3986 encoding, as SigV4 wants it: encodeURIComponent plus ! ' ( ) *. */
function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An S3 object path: every key segment encoded once, the slashes kept. */
export function encodeKeyPath(key: string): string {
  return key.split('/').map(encodeRfc3986).join('/');
}

/**
 * Signs a request with AWS Signature Version 4 for S3 (the signed payload hash is the body's SHA-256) and
 * returns the headers to send. Used for the small PUTs that dominate an upload, where the SDK's per-request
 * machinery costs more CPU than the request itself; the SDK's own signer is the oracle in the tests.
 */
export function signS3Request(request: RequestToSign): Record<string, string> {
  const amzDate = request.date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {
    ...request.headers,
    host: request.url.host,
    'x-amz-content-sha256': sha256Hex(request.body),
    'x-amz-date': amzDate,
  };
  if (request.credentials.sessionToken !== undefined)
    headers['x-amz-security-token'] = request.credentials.sessionToken;
  const signed = Object.keys(headers)
    .map((name) => name.toLowerCase())
    .sort();
  const lowered = Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
  const query = [...request.url.searchParams]
    .map(([name, value]) => `${encodeRfc3986(name)}=${encodeRfc3986(value)}`)
    .sort()
    .join('&');
  const canonicalRequest = [
    request.method,
    request.url.pathname,
    query,
    ...signed.map((name) => `${name}:${String(lowered[name]).trim().replace(/\s+/g, ' ')}`),
    '',
    signed.join(';'),
    headers['x-amz-content-sha256'],
  ].join('\n');
  const scope = `${day}/${request.region}/s3/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  const signingKey = hmac(
    hmac(hmac(hmac(`AWS4${request.credentials.secretAccessKey}`, day), request.region), 's3'),
    'aws4_request',
  );
  const signature = createHmac('sha256', signingKey).update(stringToSign).digest('hex');
  headers.authorization =
    `AWS4-HMAC-SHA256 Credential=${request.credentials.accessKeyId}/${scope}, ` +
    `SignedHeaders=${signed.join(';')}, Signature=${signature}`;
  return headers;
}
