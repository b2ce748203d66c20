import { CreateBucketCommand, PutBucketAclCommand, S3Client } from '@aws-sdk/client-s3';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nixCacheUrl, parseCacheUrl } from '../../src/core/cache-url.js';
import { nixAtLeast, REPO } from './nix.js';

export interface S3Server {
  port: number;
  endpoint: string;
  bucket: string;
  /** s3:// cache URL for cachectl */
  cacheUrl(prefix?: string): string;
  /**
   * The URL Nix reads the cache under `prefix` through: on s3rver, the s3:// URL cachectl prints for clients where
   * Nix has S3 built in (Nix >= 2.34 here), else the bucket over http://. Debian's Nix 2.34 is built without AWS
   * authentication: its S3 requests go unsigned, which s3rver takes (it checks no signature) and Swift's s3api
   * refuses (400), so there Nix reads through Swift's own API.
   */
  nixUrl(prefix?: string): string;
  /** the bucket over http:// (for fetch and for Nix without S3, as Debian 12's 2.8) */
  httpUrl: string;
  /** environment with credentials the server accepts */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** s3rver in a child process of the tests: its files and its process are the tests' to use. */
export interface S3rver extends S3Server {
  /** where s3rver keeps the bucket */
  dir: string;
  /** CPU seconds the server process has used so far (benchmarks report it: s3rver is often the bottleneck) */
  cpuSeconds(): number;
  /** Stops the server; `keepData` leaves its directory for a restart on the same port (an outage). */
  stop(options?: { keepData?: boolean }): Promise<void>;
}

/** cachectl's URL for a bucket on a local server, optionally under a key prefix, in Nix's form. */
function s3CacheUrl(bucket: string, endpoint: string, prefix: string | undefined): string {
  const under = prefix === undefined ? '' : `/${prefix}`;
  return `s3://${bucket}${under}?endpoint=${encodeURIComponent(endpoint)}&region=us-east-1`;
}

/** S3Server.nixUrl: see there. */
function nixS3Url(bucket: string, endpoint: string, httpUrl: string, prefix: string | undefined): string {
  if (nixAtLeast('2.34')) return nixCacheUrl(parseCacheUrl(s3CacheUrl(bucket, endpoint, prefix)));
  return prefix === undefined ? httpUrl : `${httpUrl}/${prefix}`;
}

/**
 * Starts s3rver in a child process on a free port of 127.0.0.1. `--openssl-legacy-provider` is required:
 * without it s3rver's paginated listings fail (DES in OpenSSL 3). Fails loudly when s3rver is missing.
 * Its PUTs are made atomic, as S3's are (test/helpers/s3rver-atomic.cjs).
 */
export async function startS3rver(
  bucket = 'nix-cache',
  options: { port?: number; dir?: string } = {},
): Promise<S3rver> {
  // s3rver's own bin, with PUTs made whole-or-nothing as on S3 (see the file)
  const bin = join(REPO, 'test/helpers/s3rver-atomic.cjs');
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'cachectl-s3rver-')));
  const child = spawn(
    process.execPath,
    [
      '--openssl-legacy-provider',
      bin,
      '-d',
      dir,
      '-a',
      '127.0.0.1',
      '-p',
      String(options.port ?? 0),
      '--silent',
      '--no-vhost-buckets',
      '--configure-bucket',
      bucket,
    ], // --configure-bucket must stay last: it takes the following words
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => {
      reject(new Error(`s3rver did not start in 20 s: ${output}`));
    }, 20_000);
    const onData = (data: Buffer) => {
      output += data.toString();
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
      if (match !== null) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${code}: ${output}`));
    });
  });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const endpoint = `http://127.0.0.1:${port}`;
  const httpUrl = `${endpoint}/${bucket}`;
  return {
    port,
    dir,
    endpoint,
    bucket,
    cacheUrl: (prefix) => s3CacheUrl(bucket, endpoint, prefix),
    nixUrl: (prefix) => nixS3Url(bucket, endpoint, httpUrl, prefix),
    httpUrl,
    env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
    cpuSeconds() {
      // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 a second on Linux)
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      return (Number(fields[11]) + Number(fields[12])) / 100;
    },
    async stop(stopOptions = {}) {
      process.off('exit', kill);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      if (stopOptions.keepData !== true) await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The S3 server of the end-to-end suites: s3rver, or with CACHECTL_TEST_S3=swift a new public-read bucket on the
 * Swift s3api that `bash test/swift/swift.sh start` runs (the strict second server: real SigV4, Content-MD5 checks,
 * S3-style multipart ETags).
 */
export async function startTestS3(): Promise<S3Server> {
  const server = process.env['CACHECTL_TEST_S3'] ?? 's3rver';
  if (server === 's3rver') return startS3rver();
  if (server === 'swift') return swiftBucket(Number(process.env['SWIFT_PORT'] ?? 18080));
  throw new Error(`CACHECTL_TEST_S3=${server}: use s3rver or swift`);
}

/** A new public-read bucket on the Swift s3api that `bash test/swift/swift.sh start` runs on `port`. */
export async function swiftBucket(port: number): Promise<S3Server> {
  const endpoint = `http://127.0.0.1:${port}`;
  const env = { AWS_ACCESS_KEY_ID: 'nix:admin', AWS_SECRET_ACCESS_KEY: 'secretkey' };
  // as useS3Here does: the SDK's notice about future Node versions is noise in the tests' output
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
  });
  const bucket = `cachectl-test-${Date.now()}-${randomBytes(4).toString('hex')}`;
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    // Nix reads the bucket anonymously, through Swift's own API.
    await client.send(new PutBucketAclCommand({ Bucket: bucket, ACL: 'public-read' }));
  } catch (err) {
    throw new Error(
      `Swift at ${endpoint} is not usable (start it: bash test/swift/swift.sh start): ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    client.destroy();
  }
  const httpUrl = `${endpoint}/v1/AUTH_nix/${bucket}`;
  return {
    port,
    endpoint,
    bucket,
    cacheUrl: (prefix) => s3CacheUrl(bucket, endpoint, prefix),
    nixUrl: (prefix) => (prefix === undefined ? httpUrl : `${httpUrl}/${prefix}`),
    httpUrl,
    env,
    stop: async () => undefined, // the bucket goes with Swift's directory
  };
}

/** Lets this test process read and write the bucket itself (the checks and observers do), as the children do. */
export function useS3Here(s3: S3Server): void {
  Object.assign(process.env, s3.env, {
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  });
}
