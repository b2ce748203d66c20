import { nix32Encode } from '../core/nix32.js';
import type { Compression } from '../core/narinfo.js';

/** The bucket layout of DESIGN.md section 4. Keys derive only from validated hashes, never from names. */
export const CACHE_INFO_KEY = 'nix-cache-info';
export const NARINFO_SUFFIX = '.narinfo';

export function narInfoKey(hashPart: string): string {
  return `${hashPart}${NARINFO_SUFFIX}`;
}

export function narFileExtension(compression: Compression): string {
  return { zstd: '.nar.zst', xz: '.nar.xz', none: '.nar' }[compression];
}

/** NARs are keyed by NarHash, known before the upload starts, so they stream straight to their final key. */
export function narKey(narHash: Uint8Array, compression: Compression): string {
  return `nar/${nix32Encode(narHash)}${narFileExtension(compression)}`;
}

export function renderCacheInfo(storeDir: string): string {
  return `StoreDir: ${storeDir}\nWantMassQuery: 1\nPriority: 40\n`;
}

/** The StoreDir a nix-cache-info names, or undefined when it names none. */
export function cacheInfoStoreDir(text: string): string | undefined {
  return /^StoreDir: (.*)$/m.exec(text)?.[1];
}
