import { CachectlError } from './errors.js';
import { decodeBase64 } from './hash.js';
import { canonicalSignatures, formatSignatures, parseSignature } from './signing.js';
import { baseNameProblem } from './store-path.js';

/**
 * A realisation: which store path a content-addressed derivation's output turned out to be, as Nix 2.8 keeps it
 * (`realisations/<id>.doi` in a binary cache). Ids are `sha256:<hex>!<output name>`.
 */
export interface Realisation {
  id: string;
  /** base name of the output's store path */
  outPath: string;
  signatures: string[];
  /** the realisations of the input derivations' outputs it was built from: id → out path base name */
  dependentRealisations: Map<string, string>;
}

const ID = /^sha256:[0-9a-f]{64}![A-Za-z0-9+._?=-]+$/;

export function isRealisationId(id: string): boolean {
  return ID.test(id);
}

/** A JSON object with its keys in byte order, as nlohmann::json (a std::map) writes it. */
function sortedObject(entries: Iterable<[string, string]>): string {
  const sorted = [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${sorted.map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',')}}`;
}

function withoutSignatures(realisation: Realisation): [string, string][] {
  const dependents = sortedObject(
    [...realisation.dependentRealisations].map(([id, path]) => [id, JSON.stringify(path)]),
  );
  return [
    ['dependentRealisations', dependents],
    ['id', JSON.stringify(realisation.id)],
    ['outPath', JSON.stringify(realisation.outPath)],
  ];
}

/** What a realisation's signatures sign: its JSON without `signatures` (Nix's Realisation::fingerprint). */
export function realisationFingerprint(realisation: Realisation): string {
  return sortedObject(withoutSignatures(realisation));
}

/** The `.doi` file byte for byte as Nix writes it: nlohmann's dump, keys in order, signatures as Nix keeps them. */
export function renderRealisation(realisation: Realisation): string {
  const signatures = JSON.stringify(canonicalSignatures(realisation.signatures));
  return sortedObject([...withoutSignatures(realisation), ['signatures', signatures]]);
}

/** Parses a `.doi` file the way Nix's Realisation::fromJSON reads it; `source` names it in errors. */
export function parseRealisation(text: string, source: string): Realisation {
  const fail = (why: string): never => {
    throw new CachectlError('REALISATION_INVALID', `realisation ${source} is malformed: ${why}`);
  };
  const fields = jsonObject(text, fail);
  const field = (name: string): string => {
    const value = fields[name];
    return typeof value === 'string' ? value : fail(`it has no string ${name}`);
  };
  const id = field('id');
  if (!isRealisationId(id)) fail(`id ${JSON.stringify(id)} is not sha256:<hex>!<output>`);
  const outPath = field('outPath');
  const problem = baseNameProblem(outPath);
  if (problem !== undefined) fail(`outPath ${JSON.stringify(outPath)} is not a store path base name: ${problem}`);
  const signatures: unknown = fields['signatures'] ?? [];
  if (!Array.isArray(signatures) || !signatures.every((sig) => typeof sig === 'string'))
    fail('signatures is not a list of strings');
  const dependents: unknown = fields['dependentRealisations'] ?? {};
  if (typeof dependents !== 'object' || dependents === null || Array.isArray(dependents))
    fail('dependentRealisations is not an object');
  const dependentRealisations = new Map<string, string>();
  for (const [depId, depPath] of Object.entries(dependents as Record<string, unknown>)) {
    if (!isRealisationId(depId) || typeof depPath !== 'string' || baseNameProblem(depPath) !== undefined)
      fail(`dependentRealisations has ${JSON.stringify(depId)}: ${JSON.stringify(depPath)}`);
    dependentRealisations.set(depId, depPath as string);
  }
  return { id, outPath, signatures: signatures as string[], dependentRealisations };
}

/**
 * A realisation as Nix ≥ 2.35 keeps it, its build trace (`build-trace-v2/<drv base name>/<output>.doi`): keyed
 * by the derivation's store path and the output's name instead of a hash, the value the output's path and
 * structured signatures. Nix 2.35 reads only these, Nix ≤ 2.34 only `realisations/`: both are written.
 */
export interface BuildTrace {
  /** base name of the `.drv` */
  drvPath: string;
  outputName: string;
  /** base name of the output's store path */
  outPath: string;
  /** `NAME:BASE64`, over buildTraceFingerprint (not the old realisation's fingerprint) */
  signatures: string[];
}

/**
 * What a build trace's signatures sign (Nix 2.35's UnkeyedRealisation::fingerprint): the keyed realisation's JSON
 * without its signatures, `{"key":{"drvPath":…,"outputName":…},"value":{"outPath":…}}`, as nlohmann dumps it.
 */
export function buildTraceFingerprint(trace: Omit<BuildTrace, 'signatures'>): string {
  const key = `{"drvPath":${JSON.stringify(trace.drvPath)},"outputName":${JSON.stringify(trace.outputName)}}`;
  return `{"key":${key},"value":{"outPath":${JSON.stringify(trace.outPath)}}}`;
}

/**
 * The `.doi` file byte for byte as Nix 2.35 writes it (the UnkeyedRealisation's JSON): `{"outPath":…,
 * "signatures":[{"keyName":…,"sig":…}]}`, the signatures each once, by key name then bytes.
 */
export function renderBuildTrace(trace: BuildTrace): string {
  const signatures = canonicalSignatures(trace.signatures).map((text) => {
    const colon = text.indexOf(':');
    return `{"keyName":${JSON.stringify(text.slice(0, colon))},"sig":${JSON.stringify(text.slice(colon + 1))}}`;
  });
  return `{"outPath":${JSON.stringify(trace.outPath)},"signatures":[${signatures.join(',')}]}`;
}

/**
 * Parses a build trace's `.doi` the way Nix 2.35 reads it: an object with the output's base name and, optionally,
 * signatures, each `{"keyName","sig"}` or the older `NAME:BASE64`. `source` names it in errors.
 */
export function parseBuildTrace(
  text: string,
  key: { drvPath: string; outputName: string },
  source: string,
): BuildTrace {
  const fail = (why: string): never => {
    throw new CachectlError('REALISATION_INVALID', `build trace ${source} is malformed: ${why}`);
  };
  const { outPath, signatures = [] } = jsonObject(text, fail);
  if (typeof outPath !== 'string') return fail('it has no string outPath');
  const problem = baseNameProblem(outPath);
  if (problem !== undefined) fail(`outPath ${JSON.stringify(outPath)} is not a store path base name: ${problem}`);
  if (!Array.isArray(signatures)) return fail('signatures is not a list');
  const parsed = signatures.map((entry: unknown) => {
    if (typeof entry === 'string') return parseSignature(entry) ?? fail(`signature ${JSON.stringify(entry)}`);
    const { keyName, sig } = (entry ?? {}) as { keyName?: unknown; sig?: unknown };
    const bytes = typeof sig === 'string' ? decodeBase64(sig) : undefined;
    if (typeof keyName !== 'string' || bytes === undefined) return fail(`signature ${JSON.stringify(entry)}`);
    return { keyName, sig: bytes };
  });
  return { ...key, outPath, signatures: formatSignatures(parsed) };
}

/** The JSON object `text` holds; `fail` says why when it holds none. */
function jsonObject(text: string, fail: (why: string) => never): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail((err as Error).message);
  }
  return typeof json === 'object' && json !== null && !Array.isArray(json)
    ? (json as Record<string, unknown>)
    : fail('it is not a JSON object');
}
