import { CachectlError } from './errors.js';
import { posix } from 'node:path';
import { formatHash, parseHash, type Hash } from './hash.js';
import { canonicalSignatures, formatSignatures, parseSignature, type Signature } from './signing.js';
import { baseNameProblem, DEFAULT_STORE_DIR, parseStorePath } from './store-path.js';

export type Compression = 'zstd' | 'xz' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'xz', 'none'];

/** The fields of a `<hashPart>.narinfo`, in Nix's own words. */
export interface NarInfo {
  storePath: string;
  url: string;
  compression: string;
  fileHash?: Hash;
  fileSize?: number;
  narHash: Hash;
  narSize: number;
  /** base names, as the narinfo lists them */
  references: string[];
  /** base name of the .drv */
  deriver?: string;
  sigs: string[];
  ca?: string;
}

/**
 * Renders a narinfo byte for byte as Nix's NarInfo::to_string does: its field order, `References: ` with its
 * trailing space when empty, signatures as Nix ≥ 2.34 keeps them (canonicalSignatures), CA last, every line
 * ending in a newline.
 */
export function renderNarInfo(info: NarInfo): string {
  let text = `StorePath: ${info.storePath}\n`;
  text += `URL: ${info.url}\n`;
  text += `Compression: ${info.compression}\n`;
  if (info.fileHash !== undefined) text += `FileHash: ${formatHash(info.fileHash)}\n`;
  if (info.fileSize !== undefined) text += `FileSize: ${info.fileSize}\n`;
  text += `NarHash: ${formatHash(info.narHash)}\n`;
  text += `NarSize: ${info.narSize}\n`;
  text += `References: ${[...new Set(info.references)].sort().join(' ')}\n`;
  if (info.deriver !== undefined) text += `Deriver: ${info.deriver}\n`;
  for (const sig of canonicalSignatures(info.sigs)) text += `Sig: ${sig}\n`;
  if (info.ca !== undefined) text += `CA: ${info.ca}\n`;
  return text;
}

/** The compressions Nix names (its compression.cc: its own, and libarchive's filters); empty means bzip2. */
const NIX_COMPRESSIONS = new Set([
  'none',
  'br',
  'bzip2',
  'compress',
  'grzip',
  'gzip',
  'lrzip',
  'lz4',
  'lzip',
  'lzma',
  'lzop',
  'xz',
  'zstd',
]);

/**
 * Parses a narinfo by Nix's own rules (NarInfo's constructor in nar-info.cc), rejecting what Nix rejects: each
 * line `Name: value` (the character after the colon skipped, unknown names ignored), StorePath in the store
 * (normalised as Nix's canonPath does), a hash in any algorithm and encoding Nix reads, sizes as whole numbers,
 * references split on runs of spaces with no second non-empty References line, a valid Deriver, signatures
 * `name:base64` as Nix ≥ 2.34 reads them (kept decoded and encoded again, in its order), at most one non-empty
 * CA that parses, a compression Nix knows (empty or none given means bzip2), and StorePath, URL, NarHash and a
 * non-zero NarSize present. Beyond Nix, for the GC's sake, the URL must be a key under `nar/`. `source` names
 * the object in errors.
 */
export function parseNarInfo(text: string, source: string, storeDir = DEFAULT_STORE_DIR): NarInfo {
  let line = 1;
  const fail = (why: string): never => {
    const where = line > 0 ? ` (line ${line})` : '';
    throw new CachectlError('NARINFO_INVALID', `narinfo ${source} is malformed: ${why}${where}`);
  };
  const size = (name: string, value: string): number =>
    /^[0-9]{1,15}$/.test(value) ? Number(value) : fail(`${name} ${JSON.stringify(value)} is not a size`);
  const hash = (name: string, value: string): Hash =>
    parseHash(value) ?? fail(`${name} ${JSON.stringify(value)} is not a hash Nix reads`);
  const baseName = (what: string, value: string): string => {
    const problem = baseNameProblem(value);
    return problem === undefined
      ? value
      : fail(`${what} ${JSON.stringify(value)} is not a store path base name: ${problem}`);
  };
  let storePath: string | undefined;
  let url = '';
  let compression = '';
  let narHash: Hash | undefined;
  let narSize = 0;
  let references: string[] = [];
  const sigs: Signature[] = [];
  let fileHash: Hash | undefined;
  let fileSize: number | undefined;
  let deriver: string | undefined;
  let ca: string | undefined;
  for (let at = 0; at < text.length; line++) {
    const colon = text.indexOf(':', at);
    if (colon < 0) fail("expecting ':'");
    const eol = text.indexOf('\n', colon + 2);
    if (eol < 0) fail('the last line does not end in a newline');
    const name = text.slice(at, colon);
    const value = text.slice(colon + 2, eol);
    at = eol + 1;
    if (name === 'StorePath') {
      const canonical = posix.normalize(value).replace(/(.)\/$/, '$1');
      try {
        storePath = parseStorePath(canonical, storeDir).path;
      } catch (err) {
        fail(`StorePath: ${(err as Error).message}`);
      }
    } else if (name === 'URL') url = value;
    else if (name === 'Compression') compression = value;
    else if (name === 'FileHash') fileHash = hash(name, value);
    else if (name === 'FileSize') fileSize = size(name, value);
    else if (name === 'NarHash') narHash = hash(name, value);
    else if (name === 'NarSize') narSize = size(name, value);
    else if (name === 'References') {
      if (references.length > 0) fail('a second References line');
      references = value
        .split(' ')
        .filter((ref) => ref !== '')
        .map((ref) => baseName('reference', ref));
    } else if (name === 'Deriver') {
      if (value !== 'unknown-deriver') deriver = baseName('Deriver', value);
    } else if (name === 'Sig') {
      sigs.push(parseSignature(value) ?? fail(`Sig ${JSON.stringify(value)} is not name:base64`));
    } else if (name === 'CA') {
      if (ca !== undefined) fail('a second CA line');
      if (value !== '') ca = isContentAddress(value) ? value : fail(`CA ${JSON.stringify(value)} does not parse`);
    }
  }
  line = 0;
  if (storePath === undefined) return fail('it has no StorePath');
  if (narHash === undefined) return fail('it has no NarHash');
  if (url === '') return fail('it has no URL');
  if (narSize === 0) return fail('its NarSize is missing or 0');
  if (!/^nar\/[0-9a-z]+\.nar(\.[a-z0-9]+)?$/.test(url)) fail(`URL ${JSON.stringify(url)} is not a nar/ key`);
  if (compression === '') compression = 'bzip2';
  if (!NIX_COMPRESSIONS.has(compression)) fail(`Compression ${JSON.stringify(compression)} is not one Nix knows`);
  // Built field by field: spreading a partial object was most of the parse's time in a GC's cold run.
  const info: NarInfo = { storePath, url, compression, narHash, narSize, references, sigs: formatSignatures(sigs) };
  if (fileHash !== undefined) info.fileHash = fileHash;
  if (fileSize !== undefined) info.fileSize = fileSize;
  if (deriver !== undefined) info.deriver = deriver;
  if (ca !== undefined) info.ca = ca;
  return info;
}

/**
 * Whether `text` is a content address as Nix's ContentAddress::parse reads one: `text:sha256:<hash>`, or
 * `fixed:[r:]<algo>:<hash>`, the hash without prefix in hex, nix32 or base64.
 */
export function isContentAddress(text: string): boolean {
  const match = /^(text|fixed):(r:)?([a-z0-9]+):(.*)$/.exec(text);
  if (match === null) return false;
  const [, method, recursive, algorithm, body] = match;
  if (method === 'text' && (recursive !== undefined || algorithm !== 'sha256')) return false;
  const parsed = parseHash(`${algorithm ?? ''}:${body ?? ''}`);
  return parsed !== undefined;
}
