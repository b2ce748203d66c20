/**
 * Derivations (`.drv` files, Nix's ATerm) as far as cachectl needs them: the ids of their outputs'
 * realisations, which Nix computes as the derivation's hash modulo its inputs (`hashDerivationModulo` with
 * masked outputs, Nix 2.8's `staticOutputHashes`). A content-addressed derivation's outputs are known only
 * through those ids, in the Realisations table. Strings are read and written one character per byte (latin1),
 * so that any bytes in an environment variable hash as they are.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CachectlError } from '../core/errors.js';

export interface DerivationOutput {
  name: string;
  /** empty for a floating or deferred output */
  path: string;
  /** `r:sha256` and the like for content-addressed outputs, else empty */
  hashAlgo: string;
  /** the fixed output's hash in hex, `impure`, or empty */
  hash: string;
}

export interface Derivation {
  outputs: DerivationOutput[];
  /** input derivations' paths with the outputs used, in the file's (sorted) order */
  inputDrvs: [string, string[]][];
  inputSrcs: string[];
  platform: string;
  builder: string;
  args: string[];
  env: [string, string][];
}

/** Parses the ATerm text of a `.drv` (decoded as latin1); `source` names it in errors. */
export function parseDerivation(text: string, source: string): Derivation {
  let at = 0;
  const fail = (why: string): never => {
    throw new CachectlError('NIX_STORE_UNREADABLE', `${source} is not a derivation Nix wrote: ${why} at ${at}`);
  };
  const expect = (token: string) => {
    if (!text.startsWith(token, at)) fail(`expected ${JSON.stringify(token)}`);
    at += token.length;
  };
  const string = (): string => {
    expect('"');
    let value = '';
    for (;;) {
      const char = text[at++] ?? fail('unterminated string');
      if (char === '"') return value;
      if (char !== '\\') value += char;
      else {
        const escaped = text[at++] ?? fail('unterminated string');
        value += escaped === 'n' ? '\n' : escaped === 'r' ? '\r' : escaped === 't' ? '\t' : escaped;
      }
    }
  };
  const list = <T>(item: () => T): T[] => {
    expect('[');
    const items: T[] = [];
    while (text[at] !== ']') {
      if (items.length > 0) expect(',');
      items.push(item());
    }
    expect(']');
    return items;
  };
  const tuple = <T>(fields: () => T): T => {
    expect('(');
    const value = fields();
    expect(')');
    return value;
  };
  expect('Derive(');
  const outputs = list(() =>
    tuple(() => {
      const name = string();
      expect(',');
      const path = string();
      expect(',');
      const hashAlgo = string();
      expect(',');
      return { name, path, hashAlgo, hash: string() };
    }),
  );
  expect(',');
  const inputDrvs = list(() => tuple((): [string, string[]] => [string(), (expect(','), list(string))]));
  expect(',');
  const inputSrcs = list(string);
  expect(',');
  const platform = string();
  expect(',');
  const builder = string();
  expect(',');
  const args = list(string);
  expect(',');
  const env = list(() => tuple((): [string, string] => [string(), (expect(','), string())]));
  expect(')');
  if (at !== text.length) fail('trailing text');
  return { outputs, inputDrvs, inputSrcs, platform, builder, args, env };
}

function quoted(value: string): string {
  return `"${value.replace(/["\\\n\r\t]/g, (char) => ({ '\n': '\\n', '\r': '\\r', '\t': '\\t' })[char] ?? `\\${char}`)}"`;
}

const quotedList = (values: readonly string[]) => `[${values.map(quoted).join(',')}]`;

type OutputKind = 'inputAddressed' | 'fixed' | 'floating' | 'deferred' | 'impure';

function outputKind(output: DerivationOutput): OutputKind {
  if (output.hash === 'impure') return 'impure';
  if (output.hashAlgo !== '') return output.hash !== '' ? 'fixed' : 'floating';
  return output.path !== '' ? 'inputAddressed' : 'deferred';
}

/**
 * The ATerm of `drv` as Nix's Derivation::unparse writes it: with `maskOutputs`, output paths and the
 * environment variables named after outputs empty; with `inputs`, the input derivations replaced by their
 * hashes (hex) and the outputs used.
 */
export function unparseDerivation(
  drv: Derivation,
  options: { maskOutputs?: boolean; inputs?: ReadonlyMap<string, ReadonlySet<string>> } = {},
): string {
  const mask = options.maskOutputs === true;
  const outputs = drv.outputs.map((output) => {
    const kind = outputKind(output);
    const path = mask || kind === 'floating' || kind === 'deferred' || kind === 'impure' ? '' : output.path;
    return `(${[output.name, path, output.hashAlgo, output.hash].map(quoted).join(',')})`;
  });
  const inputs =
    options.inputs === undefined
      ? drv.inputDrvs
      : [...options.inputs].sort(([a], [b]) => (a < b ? -1 : 1)).map(([hash, names]) => [hash, [...names].sort()]);
  const outputNames = new Set(drv.outputs.map((output) => output.name));
  return (
    `Derive([${outputs.join(',')}],` +
    `[${inputs.map(([path, names]) => `(${quoted(path as string)},${quotedList(names as string[])})`).join(',')}],` +
    `${quotedList(drv.inputSrcs)},${quoted(drv.platform)},${quoted(drv.builder)},${quotedList(drv.args)},` +
    `[${drv.env.map(([name, value]) => `(${quoted(name)},${quoted(mask && outputNames.has(name) ? '' : value)})`).join(',')}])`
  );
}

/** Reads derivations from the store, each once. */
export type ReadDerivation = (drvPath: string) => Derivation;

export function readDerivationFile(drvPath: string): Derivation {
  let text: string;
  try {
    text = readFileSync(drvPath, 'latin1');
  } catch (err) {
    throw new CachectlError('PATH_NOT_VALID', `cannot read the derivation ${drvPath}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseDerivation(text, drvPath);
}

/**
 * The hash of each output of `drv` modulo its inputs (Nix's hashDerivationModulo): for a fixed-output
 * derivation a hash of its output's content hash and path, else the SHA-256 of its ATerm with each input
 * derivation replaced by the hashes of the outputs it uses (computed unmasked, and memoized in `known`).
 */
export function hashDerivationModulo(
  drv: Derivation,
  maskOutputs: boolean,
  read: ReadDerivation,
  known = new Map<string, Map<string, Buffer>>(),
): Map<string, Buffer> {
  const kinds = new Set(drv.outputs.map(outputKind));
  if (kinds.size !== 1) throw new CachectlError('NIX_STORE_UNREADABLE', 'a derivation mixes kinds of outputs');
  if (kinds.has('impure'))
    throw new CachectlError('NIX_STORE_UNREADABLE', 'an impure derivation has no realisations to upload');
  if (kinds.has('fixed')) {
    return new Map(
      drv.outputs.map((output) => [output.name, sha256(`fixed:out:${output.hashAlgo}:${output.hash}:${output.path}`)]),
    );
  }
  const inputs = new Map<string, Set<string>>();
  for (const [inputPath, names] of drv.inputDrvs) {
    let hashes = known.get(inputPath);
    if (hashes === undefined) {
      hashes = hashDerivationModulo(read(inputPath), false, read, known);
      known.set(inputPath, hashes);
    }
    for (const name of names) {
      const hash = hashes.get(name);
      if (hash === undefined)
        throw new CachectlError('NIX_STORE_UNREADABLE', `the derivation ${inputPath} has no output ${name}`);
      const used = inputs.get(hash.toString('hex')) ?? new Set<string>();
      used.add(name);
      inputs.set(hash.toString('hex'), used);
    }
  }
  const hash = sha256(unparseDerivation(drv, { maskOutputs, inputs }));
  return new Map(drv.outputs.map((output) => [output.name, hash]));
}

/**
 * The realisation ids (`sha256:<hex>!<output>`) of each output of the derivation at `drvPath`; `known` keeps the
 * hashes of input derivations for the next call.
 */
export function realisationIds(
  drvPath: string,
  read: ReadDerivation = readDerivationFile,
  known = new Map<string, Map<string, Buffer>>(),
): Map<string, string> {
  const hashes = hashDerivationModulo(read(drvPath), true, read, known);
  return new Map([...hashes].map(([name, hash]) => [name, `sha256:${hash.toString('hex')}!${name}`]));
}

function sha256(latin1: string): Buffer {
  return createHash('sha256').update(Buffer.from(latin1, 'latin1')).digest();
}
