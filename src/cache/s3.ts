import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { fromIni } from '@aws-sdk/credential-provider-ini';
import { Upload } from '@aws-sdk/lib-storage';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CachectlError } from '../core/errors.js';
import type { S3CacheUrl } from '../core/cache-url.js';
import { nixCacheUrl } from '../core/cache-url.js';
import { DEFAULT_OBJECT_HEADERS, type ObjectHeaders, type ObjectKind } from '../core/object-headers.js';
import {
  containedKey,
  requestSignal,
  untilAborted,
  type CacheBackend,
  type ObjectEntry,
  type PutOptions,
} from './backend.js';
import { encodeKeyPath, PutSigner } from './put-signer.js';

const MIN_PART_BYTES = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;
/** Parts in flight per upload: enough to keep the link busy, few enough to bound memory (parts are buffered). */
const PARTS_IN_FLIGHT = 2;
/**
 * Attempts of a small PUT or of reading a GET's body (as the SDK's default): the first, then two retries of
 * transient failures.
 */
const ATTEMPTS = 3;

/**
 * Part size for an object of at most `sizeBytes`: S3's minimum of 5 MiB (parts are buffered in memory, a few per
 * upload), growing so that no upload needs more than 9,000 of the 10,000 parts S3 allows.
 */
export function partSizeFor(sizeBytes: number): number {
  return Math.max(MIN_PART_BYTES, Math.ceil(sizeBytes / (MAX_PARTS * 0.9)));
}

/**
 * The bucket's base URL: path style (`endpoint/bucket`) or virtual-hosted (`bucket.host`); AWS's regional
 * endpoint when no endpoint is given. The SDK's rule engine computes the same URL for every request, at about a
 * third of a small request's CPU time, so cachectl gives it this one for custom endpoints.
 */
function bucketBaseUrl(url: S3CacheUrl): URL {
  const base = new URL(url.endpoint ?? `https://s3.${url.region}.amazonaws.com`);
  const path = base.pathname.replace(/\/$/, '');
  // Virtual hosting needs a bucket name that is a valid host label, as AWS does for names with dots over TLS.
  return url.forcePathStyle || url.bucket.includes('.')
    ? new URL(`${base.origin}${path}/${url.bucket}`)
    : new URL(`${base.protocol}//${url.bucket}.${base.host}${path}`);
}

/** A cache in an S3 bucket (AWS or any S3-compatible server). */
export class S3Backend implements CacheBackend {
  readonly displayUrl: string;
  readonly listsByPage = true;
  readonly releasesStreamChunks = false;
  private readonly client: S3Client;
  private readonly bucketUrl: URL;
  /** the bucket URL without a trailing slash, that object paths are appended to */
  private readonly objectBase: string;
  private readonly agent: HttpAgent;
  private readonly signer: PutSigner;

  private readonly signal: AbortSignal;

  constructor(
    private readonly url: S3CacheUrl,
    signal?: AbortSignal,
    private readonly headers: Readonly<Record<ObjectKind, ObjectHeaders>> = DEFAULT_OBJECT_HEADERS,
  ) {
    this.signal = requestSignal(signal);
    this.displayUrl = nixCacheUrl(url);
    this.bucketUrl = bucketBaseUrl(url);
    this.objectBase = this.bucketUrl.href.replace(/\/$/, '');
    const agentOptions = { keepAlive: true, maxSockets: 64 };
    this.agent = this.bucketUrl.protocol === 'https:' ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
    const profile = url.profile ?? (process.env['AWS_PROFILE'] || undefined);
    this.client = new S3Client({
      region: url.region,
      forcePathStyle: url.forcePathStyle,
      requestChecksumCalculation: url.checksums,
      responseChecksumValidation: url.checksums,
      maxAttempts: 3,
      // Without throwOnRequestTimeout the SDK only warns about a stalled request and waits for it forever.
      requestHandler: { connectionTimeout: 5_000, requestTimeout: url.requestTimeoutMs, throwOnRequestTimeout: true },
      ...(url.endpoint === undefined
        ? {}
        : { endpoint: url.endpoint, endpointProvider: () => ({ url: new URL(this.bucketUrl) }) }),
      // A named profile is read on its own: the default chain would fall through to other sources and hide why
      // the profile failed (an expired credential_process answer becomes "Could not load credentials from any
      // providers").
      ...(profile === undefined ? {} : { credentials: fromIni({ profile }) }),
    });
    // The SDK's credential chain, resolved (and cached, refreshed) by the client, signs the small PUTs too.
    this.signer = new PutSigner(url.region, () => this.client.config.credentials());
    // DeleteObjects must carry a checksum; the SDK sends only CRC32, which Swift's s3api does not accept.
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const request = args.request as { body?: unknown; headers: Record<string, string> };
        if (context.commandName === 'DeleteObjectsCommand' && typeof request.body === 'string') {
          request.headers['content-md5'] = createHash('md5').update(request.body).digest('base64');
        }
        return next(args);
      },
      { step: 'build', name: 'contentMd5ForDeleteObjects', priority: 'low' },
    );
  }

  private key(key: string): string {
    return `${this.url.prefix}${containedKey(key)}`;
  }

  async get(key: string): Promise<Buffer | undefined> {
    for (let attempt = 1; ; attempt++) {
      let response;
      try {
        response = await this.client.send(new GetObjectCommand({ Bucket: this.url.bucket, Key: this.key(key) }), {
          abortSignal: this.signal,
        });
      } catch (err) {
        if (err instanceof S3ServiceException && err.name === 'NoSuchKey') return undefined;
        throw this.failure(`GET ${key}`, err);
      }
      try {
        return Buffer.from(
          await (response.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
        );
      } catch (err) {
        // The SDK retries a failed request, but not a body cut off after the response began.
        if (attempt === ATTEMPTS) throw this.failure(`GET ${key}`, err);
      }
    }
  }

  /** A body cut off midway fails the stream: the reader decides whether to read again. */
  async getStream(key: string): Promise<AsyncIterable<Buffer> | undefined> {
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.url.bucket, Key: this.key(key) }), {
        abortSignal: this.signal,
      });
      return response.Body as Readable;
    } catch (err) {
      if (err instanceof S3ServiceException && err.name === 'NoSuchKey') return undefined;
      throw this.failure(`GET ${key}`, err);
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.url.bucket, Key: this.key(key) }), {
        abortSignal: this.signal,
      });
      return true;
    } catch (err) {
      // A HEAD has no body, so a missing bucket and a missing key both come back as a bare 404.
      if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404 && err.name !== 'NoSuchBucket') {
        return false;
      }
      throw this.failure(`HEAD ${key}`, err);
    }
  }

  /**
   * Small objects (narinfos, small NARs) go out as one HTTP PUT, signed by the SDK's own signer
   * (cache/put-signer.ts) but not sent through the SDK's middleware stack: that stack costs more CPU than the
   * request itself, and a push is thousands of small PUTs. The credentials come from the SDK's provider chain.
   */
  async put(key: string, body: Buffer, kind: ObjectKind, options: PutOptions = {}): Promise<void> {
    const { contentType, cacheControl } = this.headers[kind];
    await options.after;
    const url = new URL(`${this.objectBase}/${encodeKeyPath(this.key(key))}`);
    for (let attempt = 1; ; attempt++) {
      let failure: unknown;
      try {
        const headers = await this.signer.sign(
          url,
          {
            'content-type': contentType,
            'cache-control': cacheControl,
            'content-length': String(body.length),
            // given, the signer takes it instead of hashing the body
            ...(options.sha256 === undefined ? {} : { 'x-amz-content-sha256': options.sha256.toString('hex') }),
          },
          body,
        );
        const response = await this.send(url, headers, body);
        if (response.status >= 200 && response.status < 300) return;
        failure = Object.assign(
          new Error(/<Message>([^<]*)<\/Message>/.exec(response.body)?.[1] ?? `HTTP ${response.status}`),
          {
            name: /<Code>([^<]*)<\/Code>/.exec(response.body)?.[1] ?? `HTTP${response.status}`,
            $metadata: { httpStatusCode: response.status },
            $response: { headers: response.headers },
          },
        );
      } catch (err) {
        failure = err;
      }
      const error = this.failure(`PUT ${key}`, failure);
      if (!error.retryable || attempt === ATTEMPTS) throw error;
      await sleep(Math.max(error.retryAfterMs ?? 0, 100 * 2 ** attempt * (0.5 + Math.random())), undefined, {
        signal: this.signal,
      });
    }
  }

  private send(
    url: URL,
    headers: Record<string, string>,
    body: Buffer,
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const options = {
        method: 'PUT',
        headers,
        agent: this.agent,
        timeout: this.url.requestTimeoutMs,
        signal: this.signal,
      };
      const req = request(url, options, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (data: string) => (text += data));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text });
        });
        res.on('error', reject);
        // A connection lost mid-response: the PUT may or may not have happened, so it is tried again.
        res.on('close', () => {
          if (!res.complete)
            reject(
              Object.assign(new Error('connection closed before the response was complete'), { code: 'ECONNRESET' }),
            );
        });
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', reject);
      req.end(body);
    });
  }

  async putStream(key: string, body: AsyncIterable<Buffer>, kind: ObjectKind, sizeHintBytes: number): Promise<void> {
    const { contentType, cacheControl } = this.headers[kind];
    // The body fails on purpose (a NarHash mismatch): that error, not the abort that follows, is the news.
    let bodyError: Error | undefined;
    const { signal } = this;
    const tracked = async function* (): AsyncGenerator<Buffer> {
      try {
        yield* untilAborted(body, signal);
      } catch (err) {
        bodyError = err instanceof Error ? err : new Error(String(err));
        throw err;
      }
    };
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.url.bucket,
        Key: this.key(key),
        Body: Readable.from(tracked()),
        ContentType: contentType,
        CacheControl: cacheControl,
      },
      partSize: partSizeFor(sizeHintBytes),
      queueSize: PARTS_IN_FLIGHT,
      leavePartsOnError: false,
    });
    const abandon = () => void upload.abort().catch(() => undefined);
    this.signal.addEventListener('abort', abandon, { once: true });
    try {
      this.signal.throwIfAborted();
      await upload.done();
    } catch (err) {
      // Nothing is published either way: a multipart upload is completed only after the whole body was read.
      throw bodyError ?? this.failure(`PUT ${key}`, err);
    } finally {
      this.signal.removeEventListener('abort', abandon);
    }
  }

  async *list(prefix: string, options: { startAfter?: string; deep?: boolean } = {}): AsyncIterable<ObjectEntry[]> {
    let continuationToken: string | undefined;
    do {
      let response;
      try {
        response = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.url.bucket,
            Prefix: this.key(prefix),
            ...(options.deep === true ? {} : { Delimiter: '/' }),
            ...(options.startAfter === undefined ? {} : { StartAfter: this.key(options.startAfter) }),
            ...(continuationToken === undefined ? {} : { ContinuationToken: continuationToken }),
          }),
          { abortSignal: this.signal },
        );
      } catch (err) {
        throw this.failure(`LIST ${prefix}`, err);
      }
      yield (response.Contents ?? []).flatMap((object) =>
        object.Key === undefined
          ? []
          : [
              {
                key: object.Key.slice(this.url.prefix.length),
                sizeBytes: object.Size ?? 0,
                lastModified: object.LastModified ?? new Date(0),
                etag: object.ETag ?? `${object.Size ?? 0}-${object.LastModified?.getTime() ?? 0}`,
              },
            ],
      );
      continuationToken = response.IsTruncated === true ? response.NextContinuationToken : undefined;
    } while (continuationToken !== undefined);
  }

  async delete(keys: readonly string[], options: { timeoutMs?: number } = {}): Promise<void> {
    if (keys.length === 0) return;
    let response;
    try {
      response = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.url.bucket,
          Delete: { Objects: keys.map((key) => ({ Key: this.key(key) })), Quiet: true },
        }),
        {
          abortSignal:
            options.timeoutMs === undefined
              ? this.signal
              : AbortSignal.any([this.signal, AbortSignal.timeout(Math.max(1, Math.floor(options.timeoutMs)))]),
        },
      );
    } catch (err) {
      throw this.failure(`DELETE ${keys.length} keys (${keys[0]}…)`, err);
    }
    const error = response.Errors?.[0];
    if (error !== undefined) {
      throw new CachectlError(
        'CACHE_WRITE_FAILED',
        `DELETE ${error.Key ?? '?'} in ${this.displayUrl}: ${error.Code ?? ''} ${error.Message ?? ''}`.trim(),
        {
          retryable: true,
        },
      );
    }
  }

  /** Nothing to do: an object S3 acknowledged is stored. */
  async flush(): Promise<void> {}

  async close(): Promise<void> {
    this.client.destroy();
    this.agent.destroy();
  }

  /** Maps an SDK failure to an error that names the bucket and the fix. */
  private failure(what: string, err: unknown): CachectlError {
    const where = `${what} in ${this.displayUrl}`;
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    const name = (err as { name?: string }).name ?? '';
    const code = (err as { code?: string }).code ?? '';
    if (name === 'NoSuchBucket' || (status === 404 && what.startsWith('HEAD'))) {
      return new CachectlError(
        'CACHE_NOT_FOUND',
        `${where}: the bucket ${this.url.bucket} does not exist; create it or fix --to`,
        { cause: err },
      );
    }
    if (name === 'CredentialsProviderError') {
      return new CachectlError(
        'CACHE_ACCESS_DENIED',
        `${where}: no usable AWS credentials (${(err as Error).message}); renew them, or set ` +
          `AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ?profile=`,
        { cause: err },
      );
    }
    if (
      status === 403 ||
      ['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken'].includes(name)
    ) {
      return new CachectlError(
        'CACHE_ACCESS_DENIED',
        `${where}: access denied (${name || status}); check the AWS credentials ` +
          `(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ?profile=) and the bucket policy`,
        { cause: err },
      );
    }
    if (name === 'SlowDown' || status === 503 || status === 429) {
      const retryAfterMs = retryAfterMsOf(err);
      return new CachectlError('CACHE_THROTTLED', `${where}: the server asks to slow down (${name || status})`, {
        retryable: true,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
        cause: err,
      });
    }
    if (status === undefined || status >= 500) {
      const detail = code !== '' ? code : (err as Error).message;
      return new CachectlError('CACHE_UNREACHABLE', `${where}: ${detail}; is the endpoint right and the server up?`, {
        retryable: true,
        cause: err,
      });
    }
    return new CachectlError('CACHE_WRITE_FAILED', `${where}: ${name} (HTTP ${status}): ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** The wait an HTTP `Retry-After` header asks for (seconds or a date), if the failed response had one. */
function retryAfterMsOf(err: unknown): number | undefined {
  const value = (err as { $response?: { headers?: Record<string, unknown> } }).$response?.headers?.['retry-after'];
  if (typeof value !== 'string' || value === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
