import { CachectlError } from './errors.js';
import { formatSha256, parseSha256 } from './hash.js';
import { baseNameProblem, DEFAULT_STORE_DIR, parseStorePath } from './store-path.js';

export type Compression = 'zstd' | 'xz' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'xz', 'none'];

/** The fields of a `<hashPart>.narinfo`, in Nix's own words. */
export interface NarInfo {
  storePath: string;
  url: string;
  compression: string;
  fileHash?: Buffer;
  fileSize?: number;
  narHash: Buffer;
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
 * trailing space when empty, signatures in std::set order, CA last, every line ending in a newline.
 */
export function renderNarInfo(info: NarInfo): string {
  let text = `StorePath: ${info.storePath}\n`;
  text += `URL: ${info.url}\n`;
  text += `Compression: ${info.compression}\n`;
  if (info.fileHash !== undefined) text += `FileHash: ${formatSha256(info.fileHash)}\n`;
  if (info.fileSize !== undefined) text += `FileSize: ${info.fileSize}\n`;
  text += `NarHash: ${formatSha256(info.narHash)}\n`;
  text += `NarSize: ${info.narSize}\n`;
  text += `References: ${[...new Set(info.references)].sort().join(' ')}\n`;
  if (info.deriver !== undefined) text += `Deriver: ${info.deriver}\n`;
  for (const sig of [...new Set(info.sigs)].sort()) text += `Sig: ${sig}\n`;
  if (info.ca !== undefined) text += `CA: ${info.ca}\n`;
  return text;
}

/**
 * Parses a narinfo the way Nix does (`Name: value` lines, unknown names ignored), checking what cachectl
 * relies on: a valid StorePath, a URL inside the cache, a SHA-256 NarHash, a positive NarSize and valid
 * reference base names. `source` names the object in errors.
 */
export function parseNarInfo(text: string, source: string, storeDir = DEFAULT_STORE_DIR): NarInfo {
  const fail = (why: string): never => {
    throw new CachectlError('NARINFO_INVALID', `narinfo ${source} is malformed: ${why}`);
  };
  if (!text.endsWith('\n')) fail('the last line does not end in a newline');
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  for (const line of text.slice(0, -1).split('\n')) {
    const colon = line.indexOf(': ');
    if (colon <= 0) fail(`line ${JSON.stringify(line)} is not "Name: value"`);
    const name = line.slice(0, colon);
    const value = line.slice(colon + 2);
    if (name === 'Sig') sigs.push(value);
    else fields.set(name, value);
  }
  const required = (name: string): string => fields.get(name) ?? fail(`it has no ${name}`);
  const sizeField = (name: string, value: string): number => {
    if (!/^[0-9]{1,15}$/.test(value)) fail(`${name} ${JSON.stringify(value)} is not a size`);
    return Number(value);
  };
  const hashField = (name: string, value: string): Buffer =>
    parseSha256(value) ?? fail(`${name} ${JSON.stringify(value)} is not a sha256 hash`);

  const storePath = required('StorePath');
  try {
    parseStorePath(storePath, storeDir);
  } catch (err) {
    fail((err as Error).message);
  }
  const url = required('URL');
  if (!/^nar\/[0-9a-z]+\.nar(\.[a-z0-9]+)?$/.test(url)) fail(`URL ${JSON.stringify(url)} is not a nar/ key`);
  const narSize = sizeField('NarSize', required('NarSize'));
  if (narSize === 0) fail('NarSize is 0');
  const referencesText = fields.get('References') ?? '';
  const references = referencesText === '' ? [] : referencesText.split(' ');
  for (const ref of references) {
    const problem = baseNameProblem(ref);
    if (problem !== undefined) fail(`reference ${JSON.stringify(ref)} is not a store path base name: ${problem}`);
  }
  const info: NarInfo = {
    storePath,
    url,
    compression: fields.get('Compression') ?? 'bzip2',
    narHash: hashField('NarHash', required('NarHash')),
    narSize,
    references,
    sigs,
  };
  const fileHash = fields.get('FileHash');
  if (fileHash !== undefined) info.fileHash = hashField('FileHash', fileHash);
  const fileSize = fields.get('FileSize');
  if (fileSize !== undefined) info.fileSize = sizeField('FileSize', fileSize);
  const deriver = fields.get('Deriver');
  if (deriver !== undefined && deriver !== 'unknown-deriver') info.deriver = deriver;
  const ca = fields.get('CA');
  if (ca !== undefined) info.ca = ca;
  return info;
}
