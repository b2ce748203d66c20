/**
 * bench/push: `cachectl push` beside `nix copy` as its users run it, in the same run, the tools alternating,
 * the median of `--runs` runs each, with CPU seconds, peak RSS and the most threads each ran at once:
 * - a ~300 MB store path of real files to file:// (and the floor `nix-store --dump | zstd -3 -T2 | sha256sum`);
 * - 1,000 tiny independent paths, and a chain of 1,000 tiny paths each referring to the one before, to file://;
 * - six 60 MiB NARs at once, for the memory a push holds;
 * - a closure shaped like real software (bench/wan-closure.nix: 400 paths in 25 layers, 110 MB) to s3rver through
 *   a proxy that holds every request 0, 30 or 50 ms, as an endpoint that far away answers.
 *
 * `nix copy` runs as a user runs it: their nix.conf and Nix's default narinfo TTLs, a narinfo cache of its own
 * for each command (`XDG_CACHE_HOME`), `compression=zstd` as cachectl writes, and to S3 through its own s3://
 * (Nix >= 2.34; http:// before). It sizes its upload pool by the CPUs it sees (2 here); it also runs as on a
 * 16-core builder, shown 16 CPUs by a file reading `0-15` bound over /sys/devices/system/cpu/online, and for the
 * big path with `parallel-compression=true`, its best setting there. Both tools sign every narinfo.
 *
 * Run inside the sid root (`npm run bench:push`), the peer is Nix 2.34 and the results go to
 * bench/results/push.json; on the host (`npm run bench:push:nix-2.8`), Debian 12's Nix 2.8, to push-nix-2.8.json.
 *
 *   npm run bench:push [-- --mb 300 --tiny 1000 --chain 1000 --wan-paths 400 --runs 3 --cases big,tiny,...]
 */
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  CACHECTL,
  REPO,
  execFileAsync,
  nixAtLeast,
  nixVersion,
  pathInfoJsonArgs,
  testEnv,
  tempDir,
} from '../test/helpers/nix.js';
import { formatSecretKey, generateSecretKey } from '../src/core/signing.js';
import { startLatencyProxy } from '../test/helpers/latency-proxy.js';
import { startS3rver, type S3rver } from '../test/helpers/s3rver.js';
import { medianOf, settleDisk, timed, userNixEnv, type Measurement } from './measure.js';
import {
  atLeast,
  atMost,
  renderPush,
  thisRun,
  writeResults,
  type PushResults,
  type PushRow,
  type Target,
} from './tables.js';

const CASES = ['big', 'tiny', 'chain', 'big-nars', 'far'] as const;
type Case = (typeof CASES)[number];

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '300' },
    tiny: { type: 'string', default: '1000' },
    chain: { type: 'string', default: '1000' },
    'wan-paths': { type: 'string', default: '400' },
    'wan-width': { type: 'string', default: '16' },
    runs: { type: 'string', default: '3' },
    cases: { type: 'string', default: CASES.join(',') },
  },
});
const RUNS = Number(values.runs);
const cases = new Set(values.cases.split(',') as Case[]);
for (const name of cases) if (!CASES.includes(name)) throw new Error(`no case ${name}: one of ${CASES.join(', ')}`);
const env = testEnv();

/** Both tools sign every narinfo with this key, as a cache's users have them do. */
const secretKey = (() => {
  const file = join(tempDir('bench-key'), 'cache.sec');
  writeFileSync(file, formatSecretKey(generateSecretKey('bench.cachectl-1')), { mode: 0o600 });
  return file;
})();

/** The CPUs `nix copy` sees on a 16-core builder. */
const BUILDER_CPUS = 16;

/** A file reading `0-15`, bound over /sys/devices/system/cpu/online for one `nix copy` (see nixCopy). */
const onlineCpus = (() => {
  const file = join(tempDir('bench-cpus'), 'online');
  writeFileSync(file, `0-${BUILDER_CPUS - 1}\n`);
  return file;
})();

/**
 * `nix copy ARGS` as a user runs it. With `builderCpus`, in a mount namespace of its own where
 * /sys/devices/system/cpu/online reads `0-15`: Nix sizes its upload pool by that (std::thread::hardware_concurrency).
 */

function nixCopy(
  to: string,
  paths: string[],
  options: { builderCpus?: boolean; extraEnv?: Record<string, string> } = {},
) {
  const runEnv = userNixEnv(options.extraEnv);
  const args = ['--to', `${to}${to.includes('?') ? '&' : '?'}secret-key=${secretKey}`, ...paths];
  if (options.builderCpus !== true) return timed('nix', ['copy', ...args], runEnv);
  return timed(
    'unshare',
    [
      // (in the sid root's chroot, / is no mount point whose propagation unshare could change: /sys's is made
      // private instead, so that the bind stays in this namespace)
      '--mount',
      '--propagation',
      'unchanged',
      'sh',
      '-ec',
      'mount --make-rprivate /sys; mount --bind "$0" /sys/devices/system/cpu/online; exec nix copy "$@"',
      onlineCpus,
      ...args,
    ],
    runEnv,
  );
}

const push = (args: string[], runEnv: NodeJS.ProcessEnv = env) =>
  timed(process.execPath, [CACHECTL, 'push', '--secret-key-file', secretKey, ...args], runEnv);

/**
 * A fresh target directory, removed when the bench exits (tempDir), not between runs: removing thousands of files
 * is disk work the next run would meet (and on this machine's ext4 without a journal, every file created scans
 * the inodes deleted in the last 30 s).
 */
const freshDir = (): string => tempDir('bench');

/**
 * The median by time of RUNS runs of each of `runs`, each run with a fresh target from `prepare`. The tools
 * alternate, so that a change in the machine's speed meets them all alike.
 */
async function medians<T extends string>(
  prepare: () => string,
  runs: Record<T, (target: string) => Promise<Measurement>>,
): Promise<Record<T, Measurement>> {
  const entries = Object.entries(runs) as [T, (target: string) => Promise<Measurement>][];
  const results = new Map<T, Measurement[]>(entries.map(([name]) => [name, []]));
  for (let i = 0; i < RUNS; i++) {
    for (const [name, run] of entries) {
      const target = prepare();
      settleDisk();
      results.get(name)?.push(await run(target));
    }
  }
  return Object.fromEntries([...results].map(([name, measured]) => [name, medianOf(measured)])) as Record<
    T,
    Measurement
  >;
}

const rows: PushRow[] = [];
const targets: Target[] = [];
const nix = `nix copy (Nix ${nixVersion()})`;

/** A row of the table; `cachectlTo` marks cachectl's own, by where they wrote (for the memory targets). */
function row(caseName: string, tool: string, m: Measurement, rate: string, cachectlTo?: 'file' | 's3'): void {
  rows.push({ case: caseName, tool, ...m, rate, ...(cachectlTo === undefined ? {} : { cachectlTo }) });
}

/** A target of issue 31: `ratio` is the peer's time (or CPU) over cachectl's, above 1 where cachectl is ahead. */
function target(what: string, ratio: number, limit: number): void {
  targets.push(atLeast(what, ratio, limit));
}

/** cachectl's peak RSS may be at most this much, MB: a builder's memory is the builds'. */
const PEAK_RSS_MB = { file: 128, s3: 200 };

async function bigPath(): Promise<void> {
  process.stderr.write(`big path: building ${values.mb} MB of real files...\n`);
  const bulk = (
    await execFileAsync('nix-build', [join(REPO, 'bench/bulk.nix'), '--no-out-link', '--argstr', 'mb', values.mb], {
      env,
    })
  ).stdout.trim();
  const narSize = Number(
    (await execFileAsync('nix', [...pathInfoJsonArgs(), bulk], { env })).stdout.match(/"narSize":(\d+)/)?.[1],
  );
  const to = (dir: string, query = 'compression=zstd') => `file://${dir}?${query}`;
  const m = await medians(freshDir, {
    floor: () => timed('sh', ['-c', `nix-store --dump '${bulk}' | zstd -3 -T2 -q | sha256sum > /dev/null`], env),
    nix: (dir) => nixCopy(to(dir), [bulk]),
    nixParallel: (dir) => nixCopy(to(dir, 'compression=zstd&parallel-compression=true'), [bulk]),
    push: (dir) => push(['--to', `file://${dir}`, bulk]),
    pushNoFsync: (dir) => push(['--to', `file://${dir}?fsync=false`, bulk]),
  });
  const label = `big path (${(narSize / 1e6).toFixed(0)} MB NAR) to file://`;
  const rate = (x: Measurement) => `${(narSize / 1e6 / x.seconds).toFixed(0)} MB/s`;
  row(label, 'floor: nix-store --dump, zstd -3 -T2, sha256sum (piped)', { ...m.floor, peakRssMb: 0 }, rate(m.floor));
  row('', nix, m.nix, rate(m.nix));
  row('', `${nix}, parallel-compression=true`, m.nixParallel, rate(m.nixParallel));
  row('', 'cachectl push', m.push, rate(m.push), 'file');
  row('', 'cachectl push, not flushed (?fsync=false)', m.pushNoFsync, rate(m.pushNoFsync), 'file');
  target('big path: × `nix copy` with parallel-compression=true', m.nixParallel.seconds / m.push.seconds, 1.1);
}

/** `nix copy` and cachectl to file:// of `paths`, `count` of them, under `label`, with the targets of tiny paths. */
async function manyTiny(label: string, what: string, paths: string[], count: number): Promise<void> {
  const m = await medians(freshDir, {
    nix: (dir) => nixCopy(`file://${dir}?compression=zstd`, paths),
    nixListing: (dir) => nixCopy(`file://${dir}?compression=zstd&write-nar-listing=true`, paths),
    push: (dir) => push(['--to', `file://${dir}`, ...paths]),
    pushNoListing: (dir) => push(['--nar-listing', 'false', '--to', `file://${dir}`, ...paths]),
    pushNoFsync: (dir) => push(['--to', `file://${dir}?fsync=false`, ...paths]),
  });
  const rate = (x: Measurement) => `${(count / x.seconds).toFixed(0)} paths/s`;
  row(label, nix, m.nix, rate(m.nix));
  row('', `${nix}, write-nar-listing=true`, m.nixListing, rate(m.nixListing));
  row('', 'cachectl push (listings on, flushed)', m.push, rate(m.push), 'file');
  row('', 'cachectl push --nar-listing false', m.pushNoListing, rate(m.pushNoListing), 'file');
  row('', 'cachectl push, not flushed (?fsync=false)', m.pushNoFsync, rate(m.pushNoFsync), 'file');
  target(`${what}: × \`nix copy\`, flushed`, m.nix.seconds / m.push.seconds, 1.0);
  target(`${what}: × \`nix copy\`, ?fsync=false`, m.nix.seconds / m.pushNoFsync.seconds, 1.3);
  target(`${what}: \`nix copy\`'s CPU s over cachectl's`, (m.nix.cpuSeconds ?? 0) / (m.push.cpuSeconds ?? 1), 1.0);
}

async function tinyPaths(): Promise<void> {
  process.stderr.write(`${values.tiny} tiny paths...\n`);
  const dir = tempDir('bench-tiny');
  // Named for this run: the same names in another run are other paths (nothing of an earlier run is reused).
  const nonce = Date.now().toString(36);
  const files = Array.from({ length: Number(values.tiny) }, (_, i) => {
    const file = join(dir, `cachectl-bench-tiny-${nonce}-${i}`);
    writeFileSync(file, `tiny path ${i} of ${nonce}\n`);
    return file;
  });
  const tiny = (await execFileAsync('nix-store', ['--add', ...files], { env, maxBuffer: 1 << 24 })).stdout
    .trim()
    .split('\n');
  await manyTiny(`${tiny.length} tiny independent paths to file://`, 'tiny paths', tiny, tiny.length);
}

async function chain(): Promise<void> {
  process.stderr.write(`a chain of ${values.chain} tiny paths...\n`);
  const top = (
    await execFileAsync(
      'nix-instantiate',
      ['--read-write-mode', '--eval', join(REPO, 'bench/chain.nix'), '--argstr', 'length', values.chain],
      { env },
    )
  ).stdout
    .trim()
    .replaceAll('"', '');
  await manyTiny(`a chain of ${values.chain} tiny paths to file://`, 'chain', [top], Number(values.chain));
}

async function bigNars(s3: S3rver): Promise<void> {
  process.stderr.write('six 60 MiB NARs at once: memory stays bounded...\n');
  const paths = (await execFileAsync('nix-build', [join(REPO, 'bench/big-nars.nix'), '--no-out-link'], { env })).stdout
    .trim()
    .split('\n');
  let prefixes = 0;
  const m = await medians(() => `big-nars-${prefixes++}`, {
    nix: () => nixCopy(`file://${freshDir()}?compression=zstd`, paths),
    file: () => push(['--jobs', '8', '--to', `file://${freshDir()}`, ...paths]),
    s3: (prefix) => push(['--jobs', '8', '--to', s3.cacheUrl(prefix), ...paths], testEnv(s3.env)),
  });
  const rate = (x: Measurement) => `${((6 * 60 * 1048576) / 1e6 / x.seconds).toFixed(0)} MB/s`;
  row('6 × 60 MiB NARs (random data)', `${nix} to file://`, m.nix, rate(m.nix));
  row('', 'cachectl push --jobs 8 to file://', m.file, rate(m.file), 'file');
  row('', 'cachectl push --jobs 8 to s3rver (multipart)', m.s3, rate(m.s3), 's3');
}

/** The round trips the far-away case is run at, ms. */
const DELAYS_MS = [0, 30, 50];

async function farAway(s3: S3rver): Promise<void> {
  process.stderr.write(`building the ${values['wan-paths']}-path closure for the far-away case...\n`);
  const paths = (
    await execFileAsync(
      'nix-build',
      [
        join(REPO, 'bench/wan-closure.nix'),
        '--no-out-link',
        '--argstr',
        'paths',
        values['wan-paths'],
        '--argstr',
        'width',
        values['wan-width'],
      ],
      { env, maxBuffer: 1 << 24 },
    )
  ).stdout
    .trim()
    .split('\n');
  const bytes = Number(
    (await execFileAsync('nix', [...pathInfoJsonArgs(), ...paths], { env, maxBuffer: 1 << 26 })).stdout
      .match(/"narSize":\d+/g)
      ?.reduce((sum, field) => sum + Number(field.slice(10)), 0),
  );
  const closure = `${paths.length} paths, ${(bytes / 1e6).toFixed(0)} MB`;
  const proxy = await startLatencyProxy(s3.port, { delayMs: 0 });
  // Nix 2.34 through its own s3:// (its requests unsigned: Debian's build has no AWS signing, and s3rver takes
  // them); Nix 2.8 as Debian builds it has no s3:// and writes the bucket over http:// (plain PUTs).
  const nixTo = (prefix: string) =>
    nixAtLeast('2.34')
      ? `s3://${s3.bucket}/${prefix}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1&compression=zstd`
      : `${proxy.endpoint}/${s3.bucket}/${prefix}?compression=zstd`;
  /** A run's measurement with the requests it made through the proxy. */
  const counted = async (run: () => Promise<Measurement>): Promise<Measurement> => {
    const before = proxy.stats.requests;
    return { ...(await run()), requests: proxy.stats.requests - before };
  };
  // One untimed push first: s3rver's own JIT warm-up is not cachectl's cost (a real S3 is always warm).
  await push(['--to', s3.cacheUrl('warm-up'), ...paths], testEnv(s3.env));
  let prefixes = 0;
  try {
    for (const delayMs of DELAYS_MS) {
      process.stderr.write(`far away: ${delayMs} ms a request...\n`);
      proxy.delayMs = delayMs;
      const m = await medians(() => `wan-${prefixes++}`, {
        nix: (prefix) => counted(() => nixCopy(nixTo(prefix), paths, { extraEnv: s3.env })),
        nix16: (prefix) => counted(() => nixCopy(nixTo(prefix), paths, { extraEnv: s3.env, builderCpus: true })),
        push: (prefix) =>
          counted(() =>
            push(
              [
                '--to',
                `s3://${s3.bucket}/${prefix}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1`,
                ...paths,
              ],
              testEnv(s3.env),
            ),
          ),
      });
      const rate = (x: Measurement) => `${(bytes / 1e6 / x.seconds).toFixed(1)} MB/s`;
      const label = `${closure} to s3rver, ${delayMs} ms a request`;
      row(label, `${nix}, ${cpus().length} CPUs seen`, m.nix, rate(m.nix));
      row('', `${nix}, ${BUILDER_CPUS} CPUs seen`, m.nix16, rate(m.nix16));
      row('', 'cachectl push', m.push, rate(m.push), 's3');
      if (delayMs === 0) target(`far away, 0 ms: × \`nix copy\``, m.nix.seconds / m.push.seconds, 1.2);
      else target(`far away, ${delayMs} ms: × \`nix copy\` on 16 CPUs`, m.nix16.seconds / m.push.seconds, 2);
    }
  } finally {
    await proxy.stop();
  }
}

async function main(): Promise<void> {
  if (cases.has('big')) await bigPath();
  if (cases.has('tiny')) await tinyPaths();
  if (cases.has('chain')) await chain();
  if (cases.has('big-nars') || cases.has('far')) {
    const s3 = await startS3rver();
    try {
      if (cases.has('big-nars')) await bigNars(s3);
      if (cases.has('far')) await farAway(s3);
    } finally {
      await s3.stop();
    }
  }
  for (const to of ['file', 's3'] as const) {
    const peaks = rows.filter((r) => r.cachectlTo === to).map((r) => r.peakRssMb);
    if (peaks.length > 0)
      targets.push(
        atMost(`cachectl's peak RSS to ${to === 'file' ? 'file://' : 'S3'}, MB`, Math.max(...peaks), PEAK_RSS_MB[to]),
      );
  }
  const results: PushResults = { ...thisRun(), nix: nixVersion(), runs: RUNS, rows, targets };
  process.stdout.write(`\n${renderPush(results)}\n`);
  writeResults(nixAtLeast('2.34') ? 'push.json' : 'push-nix-2.8.json', results);
}

await main();
