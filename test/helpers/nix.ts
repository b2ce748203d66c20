import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const execFileAsync = promisify(execFile);

const exitTasks: (() => void)[] = [];

/** Runs `task` when the test process exits (one listener for all, however many tests register). */
export function onExit(task: () => void): void {
  if (exitTasks.length === 0) {
    process.once('exit', () => {
      for (const exitTask of exitTasks) {
        try {
          exitTask();
        } catch {
          // best effort: a test's leftovers must not fail the run
        }
      }
    });
  }
  exitTasks.push(task);
}

/**
 * Stops what a test started once that test ends, failed or not, so that nothing it started outlives it and keeps
 * the test file running; and in any case when this process exits. Call it from a test's body: an `after` made in
 * a `before` hook runs right after that hook. Outside the test runner (the benchmarks), only at exit.
 */
export function stopWhenDone(stop: () => void): void {
  onExit(stop);
  if (process.env['NODE_TEST_CONTEXT'] !== undefined) after(stop);
}

/** A new temporary directory, removed when the test process exits (caches and fresh stores add up). */
export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `cachectl-${name}-`));
  onExit(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** The repository root (tests run from dist/test/…). */
export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const CACHECTL = join(REPO, 'dist/src/bin/cachectl.cjs');
const FIXTURES = join(REPO, 'test/fixtures/closures.nix');

/**
 * The environment every Nix command of the tests runs in: no substituters, no build users, no sandbox, no
 * narinfo caching, a private cache dir; configured through NIX_CONFIG, never by editing the machine.
 * AWS_EC2_METADATA_DISABLED keeps the SDK's credential chain from probing an instance metadata address.
 */
export function testEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // A machine's NODE_EXTRA_CA_CERTS makes every Node start parse that bundle (50 ms here, most of a `cachectl`
  // command's time); nothing here speaks TLS, and a systemd unit does not inherit it.
  const { NODE_EXTRA_CA_CERTS: _certificates, ...inherited } = process.env;
  return {
    ...inherited,
    NIX_CONFIG: [
      'build-users-group =',
      'sandbox = false',
      'substituters =',
      'experimental-features = nix-command',
      'require-sigs = true',
      'narinfo-cache-negative-ttl = 0',
      'narinfo-cache-positive-ttl = 0',
      'builders =',
    ].join('\n'),
    XDG_CACHE_HOME: tempDir('xdg'),
    AWS_EC2_METADATA_DISABLED: 'true',
    NODE_NO_WARNINGS: '1',
    ...extra,
  };
}

let version: string | undefined;

/**
 * The version of the Nix the tests run, as `nix-store --version` prints it: 2.34.x inside the sid root
 * (test/sid-root.sh), Debian 12's 2.8.0 outside. Throws when Nix is missing.
 */
export function nixVersion(): string {
  if (version === undefined) {
    requireNix();
    const text = execFileSync('nix-store', ['--version'], { env: testEnv() }).toString();
    version = versionIn(text);
  }
  return version;
}

/** The version `nix-store --version` printed (`nix-store (Nix) 2.34.8`). */
function versionIn(printed: string): string {
  const found = /(\d+\.\d+(?:\.\d+)?)\s*$/.exec(printed)?.[1];
  if (found === undefined) throw new Error(`nix-store --version printed ${JSON.stringify(printed)}`);
  return found;
}

/** Whether the Nix the tests run is `wanted` (like '2.34') or newer. */
export function nixAtLeast(wanted: string): boolean {
  const have = nixVersion().split('.').map(Number);
  const want = wanted.split('.').map(Number);
  for (let i = 0; i < want.length; i++) {
    const difference = (have[i] ?? 0) - (want[i] ?? 0);
    if (difference !== 0) return difference > 0;
  }
  return true;
}

/**
 * `nix path-info --json` as the Nix at hand takes it: with `--json-format 1` from 2.33, which warns without it
 * (the flag does not exist before). Its `narSize` fields are the same in both Nix's formats.
 */
export function pathInfoJsonArgs(): string[] {
  return ['path-info', '--json', ...(nixAtLeast('2.33') ? ['--json-format', '1'] : [])];
}

/** The Debian sid root of test/sid-root.sh, with the Nix users run, and that Nix's version. */
export function sidRoot(): { dir: string; nixVersion: string } {
  const script = join(REPO, 'test/sid-root.sh');
  const dir = execFileSync('bash', [script, 'path']).toString().trim();
  const printed = execFileSync('bash', [script, 'run', 'nix-store', '--version'], { env: testEnv() }).toString();
  return { dir, nixVersion: versionIn(printed) };
}

/** A suite's title with the Nix it runs against: `cachectl push to file:// (Nix 2.34.8)`. */
export function withNix(title: string): string {
  return `${title} (Nix ${nixVersion()})`;
}

/** Fails loudly when Nix is missing: a test that needs Nix must never pass by skipping. */
export function requireNix(): void {
  try {
    execFileSync('nix-store', ['--version'], { env: testEnv(), stdio: 'pipe' });
  } catch (err) {
    throw new Error(
      `Nix is required for this test and is missing (run: bash test/setup.sh): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

export type Fixture =
  | 'tiny'
  | 'lib'
  | 'app'
  | 'top'
  | 'multi.out'
  | 'multi.dev'
  | 'tree'
  | 'listed'
  | 'latin1'
  | 'symroot'
  | 'execroot'
  | 'big'
  | 'chain';

/** Builds fixtures (test/fixtures/closures.nix) and returns their store paths. A nonce gives fresh paths. */
export async function buildFixtures<T extends Fixture>(
  attrs: readonly T[],
  options: { nonce?: string; bigMb?: number; chainLength?: number } = {},
): Promise<Record<T, string>> {
  const args = [FIXTURES, '--no-out-link', '--argstr', 'nonce', options.nonce ?? ''];
  args.push(
    '--argstr',
    'bigMb',
    // past the NARs sent whole (32 MiB): a multipart upload on s3
    String(options.bigMb ?? 40),
    '--argstr',
    'chainLength',
    String(options.chainLength ?? 40),
  );
  for (const attr of attrs) args.push('-A', attr);
  const { stdout } = await execFileAsync('nix-build', args, { env: testEnv(), maxBuffer: 1 << 24 });
  const paths = stdout.trim().split('\n');
  if (paths.length !== attrs.length)
    throw new Error(`nix-build printed ${paths.length} paths for ${attrs.length} attributes`);
  return Object.fromEntries(attrs.map((attr, i) => [attr, paths[i]])) as Record<T, string>;
}

/** Builds the `dag` fixture: `size` small paths with overlapping closures, all of them returned. */
export async function buildDag(nonce: string, size: number): Promise<string[]> {
  const args = [
    FIXTURES,
    '--no-out-link',
    '--argstr',
    'nonce',
    nonce,
    '--argstr',
    'dagSize',
    String(size),
    '-A',
    'dag',
  ];
  const { stdout } = await execFileAsync('nix-build', args, { env: testEnv(), maxBuffer: 1 << 24 });
  const paths = stdout.trim().split('\n');
  if (paths.length !== size) throw new Error(`nix-build printed ${paths.length} paths for a dag of ${size}`);
  return paths;
}

/** Runs a command with the test environment; never throws, returns what happened. */
export async function run(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = testEnv(),
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { env, maxBuffer: 1 << 26 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

export function cachectl(args: readonly string[], env?: NodeJS.ProcessEnv) {
  return run(process.execPath, [CACHECTL, ...args], env);
}

/** `nix store verify -r` against a cache: checks signatures, NAR hashes and closure completeness. */
export function nixVerify(storeUrl: string, publicKey: string, paths: readonly string[]) {
  return run('nix', ['store', 'verify', '--store', storeUrl, '--trusted-public-keys', publicKey, '-r', ...paths]);
}

/** Substitutes `paths` from a cache into a fresh chroot store, as a new client would. */
export function nixCopyFrom(storeUrl: string, publicKey: string, paths: readonly string[]) {
  const target = tempDir('fresh-store');
  return run('nix', [
    'copy',
    '--from',
    storeUrl,
    '--to',
    target,
    '--option',
    'trusted-public-keys',
    publicKey,
    ...paths,
  ]);
}

/** The store paths of the closures of `paths`, from Nix itself. */
export async function nixClosure(paths: readonly string[]): Promise<string[]> {
  const { stdout } = await execFileAsync('nix-store', ['-qR', ...paths], { env: testEnv() });
  return stdout.trim().split('\n').sort();
}

export interface Key {
  secretFile: string;
  publicKey: string;
}

/** A new signing key pair, made by `cachectl keygen`. */
export async function newKey(name: string): Promise<Key> {
  const secretFile = join(tempDir('key'), 'key.sec');
  const result = await cachectl(['keygen', name, '--secret-key-file', secretFile]);
  if (result.code !== 0) throw new Error(`cachectl keygen failed: ${result.stderr}`);
  return { secretFile, publicKey: result.stdout.trim() };
}
