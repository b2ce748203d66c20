import { nix32Decode, nix32Encode } from './nix32.js';

/**
 * SHA-256 digests as Nix writes them. Three encodings meet here: narinfo `sha256:<nix32>`, the store DB
 * `sha256:<hex>`, and `nix path-info --json` SRI `sha256-<base64>`.
 */
const SHA256_BYTES = 32;

/** Parses a SHA-256 hash in any of Nix's encodings; undefined when it is none of them. */
export function parseSha256(text: string): Buffer | undefined {
  let body: string;
  if (text.startsWith('sha256:')) body = text.slice('sha256:'.length);
  else if (text.startsWith('sha256-')) return decodeBase64Exact(text.slice('sha256-'.length));
  else return undefined;
  if (/^[0-9a-f]{64}$/.test(body)) return Buffer.from(body, 'hex');
  if (body.length === 52) return nix32Decode(body);
  return decodeBase64Exact(body);
}

function decodeBase64Exact(body: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(body)) return undefined;
  const bytes = Buffer.from(body, 'base64');
  return bytes.length === SHA256_BYTES ? bytes : undefined;
}

/** `sha256:<nix32>`, the form narinfos and fingerprints use. */
export function formatSha256(digest: Uint8Array): string {
  return `sha256:${nix32Encode(digest)}`;
}
