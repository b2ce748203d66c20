/**
 * The HTTP headers each kind of object goes up with (DESIGN.md section 4): the classes Nix's readers fetch, each
 * with a Content-Type and a Cache-Control that caching proxies and CDNs in front of a bucket go by, both
 * configurable; and cachectl's own state (leases, pins, the GC's marks), which nothing should cache.
 */
export const OBJECT_CLASSES = ['narinfo', 'cacheInfo', 'nar', 'listing', 'log', 'realisation'] as const;
export type ObjectClass = (typeof OBJECT_CLASSES)[number];
/** what a write is: a class readers fetch, or cachectl's own state as JSON or text */
export type ObjectKind = ObjectClass | 'stateJson' | 'stateText';

export interface ObjectHeaders {
  readonly contentType: string;
  readonly cacheControl: string;
}

/** What may change under its key: a narinfo repaired or collected and pushed again, a log of a rebuild. */
const SHORT_LIVED = 'public, max-age=300';
/** Keyed by the hash of their content (NARs), or of the path they list: never different under the same key. */
const IMMUTABLE = 'public, max-age=31536000, immutable';
const NEVER_CACHED = 'no-store';

export const DEFAULT_OBJECT_HEADERS: Readonly<Record<ObjectKind, ObjectHeaders>> = {
  narinfo: { contentType: 'text/x-nix-narinfo', cacheControl: SHORT_LIVED },
  cacheInfo: { contentType: 'text/x-nix-cache-info', cacheControl: SHORT_LIVED },
  nar: { contentType: 'application/x-nix-nar', cacheControl: IMMUTABLE },
  listing: { contentType: 'application/json', cacheControl: IMMUTABLE },
  log: { contentType: 'text/plain; charset=utf-8', cacheControl: SHORT_LIVED },
  realisation: { contentType: 'application/json', cacheControl: SHORT_LIVED },
  stateJson: { contentType: 'application/json', cacheControl: NEVER_CACHED },
  stateText: { contentType: 'text/plain; charset=utf-8', cacheControl: NEVER_CACHED },
};

/**
 * The headers with `overrides` (`CLASS=VALUE`, e.g. `narinfo=public, max-age=60`) of one header applied; the
 * problems found, each naming the setting and the fix.
 */
export function withOverrides(
  headers: Readonly<Record<ObjectKind, ObjectHeaders>>,
  header: keyof ObjectHeaders,
  setting: string,
  overrides: readonly string[],
  problems: string[],
): Record<ObjectKind, ObjectHeaders> {
  const result = { ...headers };
  for (const override of overrides) {
    const equals = override.indexOf('=');
    const objectClass = override.slice(0, equals) as ObjectClass;
    const value = override.slice(equals + 1).trim();
    if (equals <= 0 || !OBJECT_CLASSES.includes(objectClass)) {
      problems.push(
        `${setting} ${JSON.stringify(override)} must be CLASS=VALUE, CLASS one of ${OBJECT_CLASSES.join(', ')}`,
      );
    } else if (value === '' || /[\r\n]/.test(value)) {
      problems.push(`${setting} ${JSON.stringify(override)} has an empty value or a line break`);
    } else {
      result[objectClass] = { ...result[objectClass], [header]: value };
    }
  }
  return result;
}
