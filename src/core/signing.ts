import { createHash, randomBytes } from 'node:crypto';
import * as ed from '@noble/ed25519';
import { CachectlError } from './errors.js';
import { decodeBase64, formatSha256 } from './hash.js';

/** A Nix signing key: `NAME:base64(seed32 || pub32)` on disk. */
export interface SecretKey {
  readonly name: string;
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
}

export interface PublicKey {
  readonly name: string;
  readonly key: Uint8Array;
}

function useNodeSha512(): void {
  // @noble/ed25519 needs a synchronous SHA-512 for its sync API; Node's is the fastest at hand.
  ed.hashes.sha512 ??= (message) => new Uint8Array(createHash('sha512').update(message).digest());
}

function splitKey(text: string): { name: string; bytes: Buffer } | undefined {
  const colon = text.indexOf(':');
  if (colon <= 0) return undefined;
  const body = text.slice(colon + 1);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) return undefined;
  return { name: text.slice(0, colon), bytes: Buffer.from(body, 'base64') };
}

/**
 * Parses a secret key in Nix's format (what `nix key generate-secret` writes). `source` names where it came
 * from (a file path, never the key). Trailing whitespace is tolerated; anything else is an error.
 */
export function parseSecretKey(text: string, source: string): SecretKey {
  const parts = splitKey(text.trimEnd());
  const fix = 'expected NAME:BASE64 of 64 bytes as written by `nix key generate-secret` or `cachectl keygen`';
  if (parts === undefined) {
    throw new CachectlError('SECRET_KEY_INVALID', `secret key file ${source} is malformed: ${fix}`);
  }
  if (parts.bytes.length !== 64) {
    throw new CachectlError(
      'SECRET_KEY_INVALID',
      `secret key file ${source} holds ${parts.bytes.length} bytes, not 64: ${fix}` +
        (parts.bytes.length === 32 ? ' (is it a public key?)' : ''),
    );
  }
  useNodeSha512();
  const seed = parts.bytes.subarray(0, 32);
  const publicKey = parts.bytes.subarray(32);
  if (!Buffer.from(ed.getPublicKey(seed)).equals(publicKey)) {
    throw new CachectlError(
      'SECRET_KEY_INVALID',
      `secret key file ${source} is corrupt: its public half does not match its seed; generate a new key`,
    );
  }
  return { name: parts.name, seed: new Uint8Array(seed), publicKey: new Uint8Array(publicKey) };
}

export function parsePublicKey(text: string): PublicKey {
  const parts = splitKey(text.trim());
  if (parts === undefined || parts.bytes.length !== 32) {
    throw new CachectlError('PUBLIC_KEY_INVALID', `public key ${JSON.stringify(text)} is not NAME:BASE64 of 32 bytes`);
  }
  return { name: parts.name, key: new Uint8Array(parts.bytes) };
}

export function formatPublicKey(key: SecretKey): string {
  return `${key.name}:${Buffer.from(key.publicKey).toString('base64')}`;
}

export function formatSecretKey(key: SecretKey): string {
  return `${key.name}:${Buffer.concat([key.seed, key.publicKey]).toString('base64')}`;
}

export function generateSecretKey(name: string): SecretKey {
  if (name === '' || name.includes(':') || /\s/.test(name)) {
    throw new CachectlError(
      'CONFIG_INVALID',
      `key name ${JSON.stringify(name)} must be non-empty, without ':' or spaces`,
    );
  }
  useNodeSha512();
  const seed = new Uint8Array(randomBytes(32));
  return { name, seed, publicKey: ed.getPublicKey(seed) };
}

/** What Nix signs: `1;<path>;sha256:<nix32>;<narSize>;<sorted full reference paths, comma-joined>`. */
export function fingerprint(storePath: string, narHash: Uint8Array, narSize: number, references: string[]): string {
  return `1;${storePath};${formatSha256(narHash)};${narSize};${[...references].sort().join(',')}`;
}

/** A `Sig:` value: `NAME:base64(ed25519 signature)`. */
export function sign(key: SecretKey, fingerprintText: string): string {
  useNodeSha512();
  const signature = ed.sign(Buffer.from(fingerprintText), key.seed);
  return `${key.name}:${Buffer.from(signature).toString('base64')}`;
}

/** A signature split as Nix holds it: the key's name and the signature's bytes. */
export interface Signature {
  keyName: string;
  sig: Buffer;
}

/**
 * A signature as Nix ≥ 2.34 reads one (Signature::parse): `NAME:BASE64` with a name and at least one byte, the
 * base64 read by Nix's own decoder. Undefined for what it refuses, which makes a whole narinfo unreadable there.
 */
export function parseSignature(text: string): Signature | undefined {
  const colon = text.indexOf(':');
  if (colon <= 0) return undefined;
  const sig = decodeBase64(text.slice(colon + 1));
  return sig === undefined || sig.length === 0 ? undefined : { keyName: text.slice(0, colon), sig };
}

export function formatSignature(signature: Signature): string {
  return `${signature.keyName}:${signature.sig.toString('base64')}`;
}

/** Nix's order of signatures (a std::set of Signature): by key name, then by the signature's bytes. */
export function compareSignatures(a: Signature, b: Signature): number {
  return Buffer.compare(Buffer.from(a.keyName), Buffer.from(b.keyName)) || Buffer.compare(a.sig, b.sig);
}

/**
 * Signatures as Nix ≥ 2.34 writes them: each decoded and encoded again, each once, in Nix's order; what Nix
 * would refuse to read is left out rather than make the object it is in unreadable.
 */
export function canonicalSignatures(sigs: Iterable<string>): string[] {
  return formatSignatures([...sigs].flatMap((text) => parseSignature(text) ?? []));
}

/** Parsed signatures as Nix ≥ 2.34 writes them: each once, in Nix's order. */
export function formatSignatures(signatures: readonly Signature[]): string[] {
  return [...new Set([...signatures].sort(compareSignatures).map(formatSignature))];
}

/** Whether `sig` is a valid signature of `fingerprintText` by one of `keys` (matched by name). */
export function verifySignature(keys: readonly PublicKey[], fingerprintText: string, sig: string): boolean {
  const parts = splitKey(sig);
  if (parts === undefined || parts.bytes.length !== 64) return false;
  useNodeSha512();
  return keys.some((key) => key.name === parts.name && ed.verify(parts.bytes, Buffer.from(fingerprintText), key.key));
}
