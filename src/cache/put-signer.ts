import { Sha256 } from '@smithy/core/checksum';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';

/** RFC 3986 encoding, as SigV4 wants it: encodeURIComponent plus ! ' ( ) *. */
function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An S3 object path: every key segment encoded once, the slashes kept. */
export function encodeKeyPath(key: string): string {
  return key.split('/').map(encodeRfc3986).join('/');
}

/**
 * Signs the small PUTs that S3Backend sends itself (see its `put`) with the SDK's own SigV4 signer and hash,
 * configured as the SDK configures them for S3: the path encoded once, the payload's SHA-256 signed and sent.
 */
export class PutSigner {
  private readonly signer: SignatureV4;

  constructor(region: string, credentials: AwsCredentialIdentity | AwsCredentialIdentityProvider) {
    this.signer = new SignatureV4({ service: 's3', region, credentials, sha256: Sha256, uriEscapePath: false });
  }

  /** The headers to send: `headers`, host, x-amz-date, x-amz-content-sha256, the session token, authorization. */
  async sign(
    url: URL,
    headers: Record<string, string>,
    body: Buffer,
    date = new Date(),
  ): Promise<Record<string, string>> {
    const signed = await this.signer.sign(
      {
        method: 'PUT',
        protocol: url.protocol,
        hostname: url.hostname,
        ...(url.port === '' ? {} : { port: Number(url.port) }),
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: { ...headers, host: url.host },
        body,
      },
      { signingDate: date },
    );
    return signed.headers;
  }
}
