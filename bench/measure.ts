import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { execFileAsync, tempDir, testEnv } from '../test/helpers/nix.js';

/**
 * The environment of a `nix copy` as a user runs it: the root's nix.conf with Nix's defaults (narinfo TTLs of an
 * hour and a month, not the tests' 0), and a narinfo cache of its own, as on a machine that has not read this
 * cache before.
 */
export function userNixEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...testEnv(extra), NIX_CONFIG: 'experimental-features = nix-command', XDG_CACHE_HOME: tempDir('xdg') };
}

/**
 * Writes out what the runs before left in the page cache, before a run: a tool that flushes (cachectl's file://
 * cache, with syncfs) would otherwise write out another's files too, and one that does not would leave its own.
 */
export function settleDisk(): void {
  execFileSync('sync');
}

/** CPU seconds (user and system, all threads) a running process has used so far. */
export function cpuSecondsOf(pid: number): number {
  return cpuFields(readFileSync(`/proc/${pid}/stat`, 'utf8'), 0);
}

/** Peak RSS (VmHWM) of a running process, MB. */
export function peakRssMb(pid: number): number {
  return sampleOf(pid).peakRssMb;
}

/** Peak RSS (MB) and threads now of a running process; NaN once it has exited and is not yet reaped. */
function sampleOf(pid: number): { peakRssMb: number; threads: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    peakRssMb: Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]) / 1024,
    threads: Number(/Threads:\s+(\d+)/.exec(status)?.[1]),
  };
}

export interface Measurement {
  seconds: number;
  peakRssMb: number;
  /** CPU time (user and system) of the command and everything it waited for */
  cpuSeconds?: number;
  /** the most threads the process ran at once (sampled every 20 ms) */
  threads?: number;
  /** HTTP requests it made, where they were counted */
  requests?: number;
}

/** Clock ticks a second in /proc's CPU times (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100;

/**
 * proc(5)'s stat line: utime + stime (fields 14 and 15), or with `children` 2 the waited-for children's cutime +
 * cstime (16 and 17), in seconds. Fields are counted from field 3, after the command's name.
 */
function cpuFields(stat: string, children: 0 | 2): number {
  const fields = (stat.split(') ').at(-1) ?? '').split(' ');
  return (Number(fields[11 + children]) + Number(fields[12 + children])) / CLOCK_TICKS;
}

/** CPU seconds (user and system) of this process's children that have ended and been waited for. */
function childrenCpuSeconds(): number {
  return cpuFields(readFileSync('/proc/self/stat', 'utf8'), 2);
}

/** Runs a command, timing it and sampling its peak RSS until it exits; fails unless it exits 0. */
export async function measure(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<Measurement & { stdout: string }> {
  const started = process.hrtime.bigint();
  const cpuBefore = childrenCpuSeconds();
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
  child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
  let peak = 0;
  let threads = 0;
  const sample = setInterval(() => {
    try {
      const now = sampleOf(child.pid as number);
      if (Number.isFinite(now.peakRssMb)) peak = Math.max(peak, now.peakRssMb);
      if (Number.isFinite(now.threads)) threads = Math.max(threads, now.threads);
    } catch {
      // exited between samples
    }
  }, 20);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearInterval(sample);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr}`);
  return { seconds, peakRssMb: peak, cpuSeconds: childrenCpuSeconds() - cpuBefore, threads, stdout };
}

/** `measure` of a command, without its output. */
export async function timed(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<Measurement> {
  const { stdout: _output, ...measured } = await measure(command, args, env);
  return measured;
}

/** The run of `runs` with the median time. */
export function medianOf<T extends { seconds: number }>(runs: readonly T[]): T {
  return [...runs].sort((a, b) => a.seconds - b.seconds)[Math.floor(runs.length / 2)] as T;
}

/**
 * `n` tiny store paths built now, named `<name>-0` … (input-addressed: the same name builds the same paths
 * again, a fresh one new paths), with their derivations.
 */
export async function buildTinyPaths(name: string, n: number): Promise<{ out: string; drv: string }[]> {
  const env = testEnv();
  const expr = `builtins.genList (i: derivation { name = "${name}-\${toString i}";
    system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \${toString i} > $out" ]; }) ${n}`;
  const outs = (await execFileAsync('nix-build', ['--no-out-link', '-E', expr], { env, maxBuffer: 1 << 24 })).stdout
    .trim()
    .split('\n');
  const drvs = (await execFileAsync('nix-store', ['-q', '--deriver', ...outs], { env, maxBuffer: 1 << 24 })).stdout
    .trim()
    .split('\n');
  return outs.map((out, i) => ({ out, drv: drvs[i] ?? '' }));
}
