import { nix32Encode } from '../core/nix32.js';
import type { Compression } from '../core/narinfo.js';

/** The bucket layout of DESIGN.md section 4. Keys derive only from validated hashes, never from names. */
export const CACHE_INFO_KEY = 'nix-cache-info';
export const NARINFO_SUFFIX = '.narinfo';
export const LISTING_SUFFIX = '.ls';

export function narInfoKey(hashPart: string): string {
  return `${hashPart}${NARINFO_SUFFIX}`;
}

/** The NAR listing of a path, beside its narinfo. */
export function narListingKey(hashPart: string): string {
  return `${hashPart}${LISTING_SUFFIX}`;
}

/** The realisation of a derivation output, by its id (`sha256:<hex>!<output>`). */
export function realisationKey(id: string): string {
  return `${REALISATIONS_PREFIX}${id}.doi`;
}

/** The build trace (Nix ≥ 2.35's realisation) of the output `outputName` of the derivation `drvPath`. */
export function buildTraceKey(drvPath: string, outputName: string): string {
  return `${BUILD_TRACE_PREFIX}${drvPath.slice(drvPath.lastIndexOf('/') + 1)}/${outputName}.doi`;
}

/** The build log of a derivation: `log/<drv base name>`, where `nix log --store` looks. */
export function logKey(drvPath: string): string {
  return `${LOG_PREFIX}${drvPath.slice(drvPath.lastIndexOf('/') + 1)}`;
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

export const NAR_PREFIX = 'nar/';
/**
 * How many values the first nix32 digit of a key under `prefix` takes: a NAR's hash (256 bits in 52 digits) puts
 * one bit there, a hash part (160 bits in 32 digits) five. What a listing split into ranges needs to know.
 */
export function firstDigitValues(prefix: string): number {
  return prefix === NAR_PREFIX ? 2 : 32;
}
export const LOG_PREFIX = 'log/';
export const REALISATIONS_PREFIX = 'realisations/';
export const BUILD_TRACE_PREFIX = 'build-trace-v2/';
/** pins: `gcroots/<name>`, one store path per line */
export const PINS_PREFIX = 'gcroots/';
/** writers' leases: `cachectl/leases/<writer-id>` */
export const LEASES_PREFIX = 'cachectl/leases/';
/** one object per GC sweeping now: `cachectl/gc/sweeping/<gc-id>` */
export const SWEEPS_PREFIX = 'cachectl/gc/sweeping/';
/** the GC's marks: when each unreachable object was first seen unreachable */
export const MARKS_KEY = 'cachectl/gc/marks';

const NIX32 = '[0123456789abcdfghijklmnpqrsvwxyz]';
const NARINFO_KEY = new RegExp(`^(${NIX32}{32})\\.narinfo$`);
const LISTING_KEY = new RegExp(`^(${NIX32}{32})\\.ls$`);
const REALISATION_KEY = /^realisations\/sha256:[0-9a-f]{64}![A-Za-z0-9+._?=-]+\.doi$/;
const NAR_KEY = /^nar\/[0-9a-z]+\.nar(\.[a-z0-9]+)?$/;
const LOG_KEY = new RegExp(`^log/${NIX32}{32}-[A-Za-z0-9+._?=-]+\\.drv$`);
const BUILD_TRACE_KEY = new RegExp(
  `^build-trace-v2/(${NIX32}{32}-[A-Za-z0-9+._?=-]+\\.drv)/([A-Za-z0-9+._?=-]+)\\.doi$`,
);
/** names of pins and writer ids: no slashes, nothing hidden */
export const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** The hash part a narinfo key is for, or undefined if the key is not a narinfo's. */
export function narInfoHashPart(key: string): string | undefined {
  return NARINFO_KEY.exec(key)?.[1];
}

/** The hash part a listing key is for, or undefined if the key is not a listing's. */
export function listingHashPart(key: string): string | undefined {
  return LISTING_KEY.exec(key)?.[1];
}

export function isRealisationKey(key: string): boolean {
  return REALISATION_KEY.test(key);
}

export function isNarKey(key: string): boolean {
  return NAR_KEY.test(key);
}

export function isLogKey(key: string): boolean {
  return LOG_KEY.test(key);
}

/** The derivation (base name) and output a build trace's key is for, or undefined if it is not one's. */
export function buildTraceOf(key: string): { drvPath: string; outputName: string } | undefined {
  const match = BUILD_TRACE_KEY.exec(key);
  return match === null ? undefined : { drvPath: match[1] as string, outputName: match[2] as string };
}
