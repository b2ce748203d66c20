import { nix32Decode, nix32Encode, nix32Length } from './nix32.js';

/**
 * Hashes as Nix reads and writes them (its hash.cc). Three encodings meet here: narinfo `sha256:<nix32>`, the
 * store DB `sha256:<hex>`, and SRI `sha256-<base64>`; narinfos written by other tools may use other algorithms.
 */
export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512';
const HASH_BYTES: Readonly<Record<HashAlgorithm, number>> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

export interface Hash {
  algorithm: HashAlgorithm;
  digest: Buffer;
}

function isAlgorithm(name: string): name is HashAlgorithm {
  return Object.hasOwn(HASH_BYTES, name);
}

/**
 * A hash with its algorithm in front, as Nix's Hash::parseAnyPrefixed reads it: `<algo>:<body>` with the body in
 * hex (either case), nix32 or base64, told apart by their exact lengths; or SRI, `<algo>-<base64>`, read as
 * Nix's base64 decoder does (it stops at the first `=`, so padding may be missing or extra). Undefined when it
 * is none of these.
 */
export function parseHash(text: string): Hash | undefined {
  const colon = text.indexOf(':');
  if (colon >= 0) {
    const algorithm = text.slice(0, colon);
    if (!isAlgorithm(algorithm)) return undefined;
    const digest = parseHashBody(text.slice(colon + 1), algorithm);
    return digest === undefined ? undefined : { algorithm, digest };
  }
  const dash = text.indexOf('-');
  const algorithm = text.slice(0, dash);
  if (dash < 0 || !isAlgorithm(algorithm)) return undefined;
  const digest = decodeBase64(text.slice(dash + 1));
  return digest?.length === HASH_BYTES[algorithm] ? { algorithm, digest } : undefined;
}

/** The body of a hash without prefix (Nix's parseNonSRIUnprefixed): hex, nix32 or base64 by exact length. */
export function parseHashBody(body: string, algorithm: HashAlgorithm): Buffer | undefined {
  const bytes = HASH_BYTES[algorithm];
  if (body.length === bytes * 2) return /^[0-9a-fA-F]*$/.test(body) ? Buffer.from(body, 'hex') : undefined;
  if (body.length === nix32Length(bytes)) return nix32Decode(body);
  if (body.length === ((Math.floor((4 * bytes) / 3) + 3) & ~3)) {
    const digest = decodeBase64(body);
    return digest?.length === bytes ? digest : undefined;
  }
  return undefined;
}

const BASE64_DIGITS = /^[A-Za-z0-9+/\n]*$/;

/** Nix's base64 decoder: up to the first `=`, newlines skipped, any other character outside the alphabet fatal. */
export function decodeBase64(text: string): Buffer | undefined {
  const end = text.indexOf('=');
  const body = end < 0 ? text : text.slice(0, end);
  if (!BASE64_DIGITS.test(body)) return undefined;
  return Buffer.from(body.replace(/\n/g, ''), 'base64');
}

/** A SHA-256 digest from any of Nix's encodings; undefined for anything else. */
export function parseSha256(text: string): Buffer | undefined {
  const hash = parseHash(text);
  return hash?.algorithm === 'sha256' ? hash.digest : undefined;
}

/** `<algo>:<nix32>`, the form narinfos and fingerprints use. */
export function formatHash(hash: Hash): string {
  return `${hash.algorithm}:${nix32Encode(hash.digest)}`;
}

export function formatSha256(digest: Uint8Array): string {
  return formatHash({ algorithm: 'sha256', digest: Buffer.from(digest) });
}
