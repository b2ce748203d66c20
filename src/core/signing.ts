import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as ed25519Sign,
  verify as ed25519Verify,
  type KeyObject,
} from 'node:crypto';
import { CachectlError } from './errors.js';
import { decodeBase64, formatSha256 } from './hash.js';

/** A Nix signing key: `NAME:base64(seed32 || pub32)` on disk. */
export interface SecretKey {
  readonly name: string;
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  /** the seed as OpenSSL's key, for node:crypto's Ed25519 (0.045 ms a signature; pure JS took 0.35 ms) */
  readonly privateKey: KeyObject;
}

export interface PublicKey {
  readonly name: string;
  readonly key: Uint8Array;
}

/** An Ed25519 seed as a private key: PKCS#8's fixed prefix, then the seed (RFC 8410). */
function privateKeyOf(seed: Uint8Array): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
    format: 'der',
    type: 'pkcs8',
  });
}

/** The 32 bytes of an Ed25519 public key (its JWK `x`). */
function rawPublicKey(key: KeyObject): Uint8Array {
  return new Uint8Array(Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x as string, 'base64url'));
}

/** OpenSSL's keys of public keys already seen: verify checks thousands of narinfos against a few keys. */
const publicKeyObjects = new WeakMap<PublicKey, KeyObject | null>();

/** A public key as OpenSSL's key; undefined for bytes that are not a point of the curve. */
function publicKeyOf(key: PublicKey): KeyObject | undefined {
  let object = publicKeyObjects.get(key);
  if (object === undefined) {
    try {
      const x = Buffer.from(key.key).toString('base64url');
      object = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    } catch {
      object = null;
    }
    publicKeyObjects.set(key, object);
  }
  return object ?? undefined;
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
  const seed = parts.bytes.subarray(0, 32);
  const publicKey = parts.bytes.subarray(32);
  const privateKey = privateKeyOf(seed);
  if (!Buffer.from(rawPublicKey(privateKey)).equals(publicKey)) {
    throw new CachectlError(
      'SECRET_KEY_INVALID',
      `secret key file ${source} is corrupt: its public half does not match its seed; generate a new key`,
    );
  }
  return { name: parts.name, seed: new Uint8Array(seed), publicKey: new Uint8Array(publicKey), privateKey };
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
  const { privateKey } = generateKeyPairSync('ed25519');
  const seed = new Uint8Array(Buffer.from(privateKey.export({ format: 'jwk' }).d as string, 'base64url'));
  return { name, seed, publicKey: rawPublicKey(privateKey), privateKey };
}

/** What Nix signs: `1;<path>;sha256:<nix32>;<narSize>;<sorted full reference paths, comma-joined>`. */
export function fingerprint(storePath: string, narHash: Uint8Array, narSize: number, references: string[]): string {
  return `1;${storePath};${formatSha256(narHash)};${narSize};${[...references].sort().join(',')}`;
}

/** A `Sig:` value: `NAME:base64(ed25519 signature)`. */
export function sign(key: SecretKey, fingerprintText: string): string {
  return `${key.name}:${ed25519Sign(null, Buffer.from(fingerprintText), key.privateKey).toString('base64')}`;
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
  return keys.some((key) => {
    if (key.name !== parts.name) return false;
    const publicKey = publicKeyOf(key);
    return publicKey !== undefined && ed25519Verify(null, Buffer.from(fingerprintText), publicKey, parts.bytes);
  });
}
