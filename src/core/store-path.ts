import { CachectlError } from './errors.js';
import { isNix32 } from './nix32.js';

export const DEFAULT_STORE_DIR = '/nix/store';
const HASH_CHARS = 32;
const MAX_NAME_CHARS = 211;
const NAME_PATTERN = /^[A-Za-z0-9+\-._?=]+$/;

/** A validated store path: `<storeDir>/<hashPart>-<name>`. */
export interface StorePath {
  readonly path: string;
  /** `<hashPart>-<name>`, what narinfo `References:` lists. */
  readonly baseName: string;
  /** the 32 nix32 characters that key `<hashPart>.narinfo` */
  readonly hashPart: string;
  readonly name: string;
}

/** The hash part of a store path (or of its base name), which keys `<hashPart>.narinfo`. */
export function hashPartOf(path: string): string {
  const start = path.lastIndexOf('/') + 1;
  return path.slice(start, start + HASH_CHARS);
}

/** Why `baseName` is not a valid store path base name, or undefined when it is. */
export function baseNameProblem(baseName: string): string | undefined {
  if (baseName.length < HASH_CHARS + 2 || baseName[HASH_CHARS] !== '-') {
    return 'it does not have the form <32-character hash>-<name>';
  }
  if (!isNix32(baseName.slice(0, HASH_CHARS))) return 'its hash part is not nix32';
  const name = baseName.slice(HASH_CHARS + 1);
  if (name.length > MAX_NAME_CHARS) return `its name is longer than ${MAX_NAME_CHARS} characters`;
  if (!NAME_PATTERN.test(name)) return 'its name has characters other than letters, digits and +-._?=';
  // Since Nix 2.21 a name may start with a period, but its first dash-separated part may not be . or ..
  if (/^\.\.?(-|$)/.test(name)) return 'its name is . or .., or starts with .- or ..-';
  return undefined;
}

export function parseStorePath(path: string, storeDir = DEFAULT_STORE_DIR): StorePath {
  const prefix = `${storeDir}/`;
  if (!path.startsWith(prefix)) {
    throw new CachectlError('PATH_NOT_IN_STORE', `${JSON.stringify(path)} is not in the Nix store ${storeDir}`);
  }
  const baseName = path.slice(prefix.length);
  const problem = baseNameProblem(baseName);
  if (problem !== undefined) {
    const inside = baseName.indexOf('/');
    const hint =
      inside > 0 && baseNameProblem(baseName.slice(0, inside)) === undefined
        ? `: it is inside the store path ${prefix}${baseName.slice(0, inside)}; pass that instead`
        : `: ${problem}`;
    throw new CachectlError('STORE_PATH_INVALID', `${JSON.stringify(path)} is not a valid store path${hint}`);
  }
  return { path, baseName, hashPart: baseName.slice(0, HASH_CHARS), name: baseName.slice(HASH_CHARS + 1) };
}

/** A store path from a narinfo's `References:` entry (a base name). */
export function storePathFromBaseName(baseName: string, storeDir = DEFAULT_STORE_DIR): StorePath {
  return parseStorePath(`${storeDir}/${baseName}`, storeDir);
}
