import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { encodeKeyPath, PutSigner } from '../../src/cache/put-signer.js';

/** What the SDK itself would send for a PutObject: captured at its HTTP handler, never sent. */
async function sdkSignedPut(options: {
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  bucket: string;
  key: string;
  body: Buffer;
  contentType: string;
}) {
  let captured: { path: string; query: Record<string, string>; headers: Record<string, string> } | undefined;
  const client = new S3Client({
    endpoint: options.endpoint,
    region: options.region,
    forcePathStyle: true,
    credentials: options.credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      handle: async (request: { path: string; query: Record<string, string>; headers: Record<string, string> }) => {
        captured = request;
        throw new Error('captured');
      },
    } as never,
    maxAttempts: 1,
  });
  await client
    .send(
      new PutObjectCommand({
        Bucket: options.bucket,
        Key: options.key,
        Body: options.body,
        ContentType: options.contentType,
      }),
    )
    .catch((err: unknown) => {
      assert.equal((err as Error).message, 'captured');
    });
  assert.ok(captured !== undefined);
  return captured;
}

describe('SigV4 signing of the small PUTs S3Backend sends itself', () => {
  const cases = [
    {
      name: 'plain keys',
      region: 'us-east-1',
      key: 'nar/0a1b.nar.zst',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' },
    },
    {
      name: 'region auto, session token, a prefix that needs encoding',
      region: 'auto',
      key: "pre fix+(x)!/abc*'.narinfo",
      credentials: { accessKeyId: 'AKID2', secretAccessKey: 'secret/with+chars', sessionToken: 'token  with  spaces' },
    },
  ];
  for (const c of cases) {
    it(`produces the SDK's Authorization header (${c.name})`, async () => {
      const body = Buffer.from(`body of ${c.name}`);
      const endpoint = 'http://127.0.0.1:9000';
      const sdk = await sdkSignedPut({
        endpoint,
        region: c.region,
        credentials: c.credentials,
        bucket: 'nix-cache',
        key: c.key,
        body,
        contentType: 'text/x-nix-narinfo',
      });
      const amzDate = sdk.headers['x-amz-date'] as string;
      const date = new Date(
        `${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 11)}:` +
          `${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`,
      );
      const url = new URL(`${endpoint}/nix-cache/${encodeKeyPath(c.key)}`);
      assert.equal(url.pathname, sdk.path);
      for (const [name, value] of Object.entries(sdk.query)) url.searchParams.set(name, value);
      // Sign the headers the SDK signed (its bookkeeping headers included) but those the signer adds itself.
      const added = [
        'authorization',
        'host',
        'x-amz-date',
        'x-amz-content-sha256',
        'x-amz-security-token',
        'user-agent',
      ];
      const headers = Object.fromEntries(
        Object.entries(sdk.headers).filter(([name]) => !added.includes(name.toLowerCase())),
      );
      assert.ok('content-type' in headers && 'content-length' in headers);
      const ours = await new PutSigner(c.region, c.credentials).sign(url, headers, body, date);
      assert.equal(ours['x-amz-content-sha256'], sdk.headers['x-amz-content-sha256']);
      assert.equal(ours['authorization'], sdk.headers.authorization);
      assert.equal(ours['x-amz-security-token'], sdk.headers['x-amz-security-token']);
    });
  }
});
