/**
 * bench/push: `cachectl push` against `nix copy` and against the floor `nix-store --dump | zstd -3 -T2 |
 * sha256sum`, in the same run on the same machine, for a ~300 MB store path of real files, for 1,000 tiny
 * paths (file:// and s3rver), each with and without NAR listings, and for a chain of 1,000 tiny paths each
 * referring to the one before (file://, on the disk and on a tmpfs). Then a closure of mixed sizes in layers
 * (bench/wan-closure.nix: 400 paths in 25 layers, 110 MB) to s3rver through a proxy adding 0, 20, 30 and 50 ms
 * to every request, against `nix copy` to the same server over HTTP. Prints a table and writes
 * bench/results/push.json.
 *
 *   npm run bench:push [-- --mb 300 --tiny 1000 --chain 1000 --wan-paths 400 --wan-width 16 --runs 3]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CACHECTL, REPO, execFileAsync, pathInfoJsonArgs, testEnv, tempDir } from '../test/helpers/nix.js';
import { startLatencyProxy } from '../test/helpers/latency-proxy.js';
import { startS3rver, type S3rver } from '../test/helpers/s3rver.js';
import { measure as measureCommand, type Measurement } from './measure.js';
import { LocalStore } from '../src/nix/local-store.js';
import { renderPush, thisRun, writeResults, type PushResults } from './tables.js';

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '300' },
    tiny: { type: 'string', default: '1000' },
    chain: { type: 'string', default: '1000' },
    'wan-paths': { type: 'string', default: '400' },
    'wan-width': { type: 'string', default: '16' },
    runs: { type: 'string', default: '3' },
  },
});
const RUNS = Number(values.runs);
const env = testEnv();

/** Runs a command (through sh for pipelines) in the bench's environment, with its time and peak RSS. */
const measure = async (command: string, args: string[], runEnv: NodeJS.ProcessEnv = env): Promise<Measurement> => {
  const { seconds, peakRssMb, cpuSeconds } = await measureCommand(command, args, runEnv);
  return { seconds, peakRssMb, ...(cpuSeconds === undefined ? {} : { cpuSeconds }) };
};

/**
 * The median of `RUNS` runs (by time) of each of `runs`, each run with a fresh target from `prepare`. The runs
 * alternate, so a change in the machine's speed meets them all alike.
 */
async function medians(
  prepare: () => string,
  runs: readonly ((target: string) => Promise<Measurement>)[],
): Promise<Measurement[]> {
  const results: Measurement[][] = runs.map(() => []);
  for (let i = 0; i < RUNS; i++) {
    for (const [which, run] of runs.entries()) {
      const target = prepare();
      results[which]?.push(await run(target));
      rmSync(target, { recursive: true, force: true });
    }
  }
  return results.map((measured) => {
    measured.sort((a, b) => a.seconds - b.seconds);
    return measured[Math.floor(measured.length / 2)] as Measurement;
  });
}

async function median(prepare: () => string, run: (target: string) => Promise<Measurement>): Promise<Measurement> {
  return (await medians(prepare, [run]))[0] as Measurement;
}

const freshDir = () => tempDir('bench');

async function main(): Promise<void> {
  process.stderr.write(`building the ${values.mb} MB bulk path and ${values.tiny} tiny paths...\n`);
  const { stdout: bulkOut } = await execFileAsync(
    'nix-build',
    [join(REPO, 'bench/bulk.nix'), '--no-out-link', '--argstr', 'mb', values.mb],
    { env },
  );
  const bulk = bulkOut.trim();
  const narSize = Number(
    (await execFileAsync('nix', [...pathInfoJsonArgs(), bulk], { env })).stdout.match(/"narSize":(\d+)/)?.[1],
  );
  const tinyDir = freshDir();
  const tinyFiles = Array.from({ length: Number(values.tiny) }, (_, i) => {
    const file = join(tinyDir, `cachectl-bench-tiny-${i}`);
    writeFileSync(file, `tiny path ${i}\n`);
    return file;
  });
  const tiny = (await execFileAsync('nix-store', ['--add', ...tinyFiles], { env, maxBuffer: 1 << 24 })).stdout
    .trim()
    .split('\n');

  const rows: { case: string; tool: string; seconds: number; rate: string; peakRssMb: number }[] = [];
  const mbPerS = (m: Measurement) => `${(narSize / 1e6 / m.seconds).toFixed(0)} MB/s`;
  const pathsPerS = (m: Measurement) => `${(tiny.length / m.seconds).toFixed(0)} paths/s`;

  process.stderr.write('big path: floor, nix copy, cachectl push...\n');
  // All alternately (cachectl with and without the NAR listing, made on the same pass over the files, and without
  // the flushes to disk): the machine's speed drifts, and the ratios must not.
  const [floor, nixCopy, push, pushNoListing, pushNoFsync] = (await medians(freshDir, [
    () => measure('sh', ['-c', `nix-store --dump '${bulk}' | zstd -3 -T2 -q | sha256sum > /dev/null`]),
    (dir) => measure('nix', ['copy', '--to', `file://${dir}?compression=zstd`, bulk]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--to', `file://${dir}`, bulk]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--nar-listing', 'false', '--to', `file://${dir}`, bulk]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--to', `file://${dir}?fsync=false`, bulk]),
  ])) as [Measurement, Measurement, Measurement, Measurement, Measurement];
  rows.push({
    case: `big path (${(narSize / 1e6).toFixed(0)} MB NAR) to file://`,
    tool: 'floor: nix-store --dump, zstd -3 -T2, sha256sum (piped)',
    ...floor,
    peakRssMb: 0,
    rate: mbPerS(floor),
  });
  rows.push({ case: '', tool: 'nix copy (compression=zstd)', ...nixCopy, rate: mbPerS(nixCopy) });
  rows.push({ case: '', tool: 'cachectl push', ...push, rate: mbPerS(push) });
  rows.push({ case: '', tool: 'cachectl push --nar-listing false', ...pushNoListing, rate: mbPerS(pushNoListing) });
  rows.push({ case: '', tool: 'cachectl push, not flushed (?fsync=false)', ...pushNoFsync, rate: mbPerS(pushNoFsync) });

  process.stderr.write('tiny paths: nix copy and cachectl to file://, cachectl to s3rver...\n');
  const [tinyNix, tinyNixListing] = (await medians(freshDir, [
    (dir) => measure('nix', ['copy', '--to', `file://${dir}?compression=zstd`, ...tiny]),
    (dir) => measure('nix', ['copy', '--to', `file://${dir}?compression=zstd&write-nar-listing=true`, ...tiny]),
  ])) as [Measurement, Measurement];
  const [tinyFile, tinyFileNoListing] = (await medians(freshDir, [
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--to', `file://${dir}`, ...tiny]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--nar-listing', 'false', '--to', `file://${dir}`, ...tiny]),
  ])) as [Measurement, Measurement];
  const s3 = await startS3rver();
  // One untimed push first: s3rver's own JIT warm-up is not cachectl's cost (a real S3 is always warm).
  await measure(
    process.execPath,
    [CACHECTL, 'push', '--jobs', '16', '--to', s3.cacheUrl('warm-up'), ...tiny],
    testEnv(s3.env),
  );
  let prefixes = 0;
  const serverCpu: number[] = [];
  const tinyS3 = await median(
    () => `run${prefixes++}`,
    async (prefix) => {
      const before = s3.cpuSeconds();
      const result = await measure(
        process.execPath,
        [CACHECTL, 'push', '--jobs', '16', '--to', s3.cacheUrl(prefix), ...tiny],
        testEnv(s3.env),
      );
      serverCpu.push(s3.cpuSeconds() - before);
      return result;
    },
  );
  process.stderr.write('path info of the tiny paths: one SQLite query against nix path-info...\n');
  const store = new LocalStore();
  const queryStarted = process.hrtime.bigint();
  const infos = store.queryClosure(tiny);
  const querySeconds = Number(process.hrtime.bigint() - queryStarted) / 1e9;
  store.close();
  if (infos.size !== tiny.length) throw new Error(`path info for ${infos.size} of ${tiny.length} paths`);
  const pathInfo = await median(freshDir, () => measure('nix', [...pathInfoJsonArgs(), ...tiny]));
  rows.push({
    case: `path info of ${tiny.length} paths`,
    tool: 'nix path-info --json',
    ...pathInfo,
    rate: pathsPerS(pathInfo),
  });
  rows.push({
    case: '',
    tool: 'cachectl (one read-only SQLite query, in process)',
    seconds: querySeconds,
    peakRssMb: 0,
    rate: pathsPerS({ seconds: querySeconds, peakRssMb: 0 }),
  });

  process.stderr.write('six 60 MiB NARs at once (--jobs 8): memory stays bounded...\n');
  const { stdout: bigOut } = await execFileAsync('nix-build', [join(REPO, 'bench/big-nars.nix'), '--no-out-link'], {
    env,
  });
  const bigNars = bigOut.trim().split('\n');
  const bigBytes = 6 * 60 * 1048576;
  const bigFile = await median(freshDir, (dir) =>
    measure(process.execPath, [CACHECTL, 'push', '--jobs', '8', '--to', `file://${dir}`, ...bigNars]),
  );
  const bigS3 = await median(
    () => `big${prefixes++}`,
    (prefix) =>
      measure(
        process.execPath,
        [CACHECTL, 'push', '--jobs', '8', '--to', s3.cacheUrl(prefix), ...bigNars],
        testEnv(s3.env),
      ),
  );
  const mbPerSOf = (m: Measurement) => `${(bigBytes / 1e6 / m.seconds).toFixed(0)} MB/s`;
  rows.push({
    case: '6 × 60 MiB NARs (random data)',
    tool: 'cachectl push to file://',
    ...bigFile,
    rate: mbPerSOf(bigFile),
  });
  rows.push({ case: '', tool: 'cachectl push to s3rver (multipart)', ...bigS3, rate: mbPerSOf(bigS3) });

  rows.push({ case: `${tiny.length} tiny paths`, tool: 'nix copy to file://', ...tinyNix, rate: pathsPerS(tinyNix) });
  rows.push({
    case: '',
    tool: 'nix copy to file:// (write-nar-listing=true)',
    ...tinyNixListing,
    rate: pathsPerS(tinyNixListing),
  });
  rows.push({ case: '', tool: 'cachectl push to file://', ...tinyFile, rate: pathsPerS(tinyFile) });
  rows.push({
    case: '',
    tool: 'cachectl push to file:// --nar-listing false',
    ...tinyFileNoListing,
    rate: pathsPerS(tinyFileNoListing),
  });
  rows.push({
    case: '',
    tool:
      `cachectl push to s3rver (--jobs 16; s3rver used ` +
      `${Math.min(...serverCpu).toFixed(1)}-${Math.max(...serverCpu).toFixed(1)} CPU s)`,
    ...tinyS3,
    rate: pathsPerS(tinyS3),
  });

  process.stderr.write(`a chain of ${values.chain} tiny paths: nix copy and cachectl to file://...\n`);
  const chainTop = (
    await execFileAsync(
      'nix-instantiate',
      ['--read-write-mode', '--eval', join(REPO, 'bench/chain.nix'), '--argstr', 'length', values.chain],
      { env },
    )
  ).stdout
    .trim()
    .replaceAll('"', '');
  const chainLength = Number(values.chain);
  const perPath = (m: Measurement) => `${(chainLength / m.seconds).toFixed(0)} paths/s`;
  const [chainNix, chainNixListing, chainPush, chainPushNoListing, chainPushNoFsync] = (await medians(freshDir, [
    (dir) => measure('nix', ['copy', '--to', `file://${dir}?compression=zstd`, chainTop]),
    (dir) => measure('nix', ['copy', '--to', `file://${dir}?compression=zstd&write-nar-listing=true`, chainTop]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--to', `file://${dir}`, chainTop]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--nar-listing', 'false', '--to', `file://${dir}`, chainTop]),
    (dir) =>
      measure(process.execPath, [
        CACHECTL,
        'push',
        '--nar-listing',
        'false',
        '--to',
        `file://${dir}?fsync=false`,
        chainTop,
      ]),
  ])) as [Measurement, Measurement, Measurement, Measurement, Measurement];
  rows.push({
    case: `a chain of ${chainLength} tiny paths`,
    tool: 'nix copy to file://',
    ...chainNix,
    rate: perPath(chainNix),
  });
  rows.push({
    case: '',
    tool: 'nix copy to file:// (write-nar-listing=true)',
    ...chainNixListing,
    rate: perPath(chainNixListing),
  });
  rows.push({ case: '', tool: 'cachectl push to file://', ...chainPush, rate: perPath(chainPush) });
  rows.push({
    case: '',
    tool: 'cachectl push to file:// --nar-listing false',
    ...chainPushNoListing,
    rate: perPath(chainPushNoListing),
  });
  rows.push({
    case: '',
    tool: 'cachectl push to file:// --nar-listing false, not flushed (?fsync=false)',
    ...chainPushNoFsync,
    rate: perPath(chainPushNoFsync),
  });
  // Into a tmpfs, where making a file costs least and the same every run (on the disk it varies several times
  // over, with how many files were deleted in the minutes before): what is left is each tool's own cost a path.
  const tmpfsDir = () => mkdtempSync(join('/dev/shm', 'cachectl-bench-'));
  const [chainNixTmpfs, chainPushTmpfs] = (await medians(tmpfsDir, [
    (dir) => measure('nix', ['copy', '--to', `file://${dir}?compression=zstd`, chainTop]),
    (dir) => measure(process.execPath, [CACHECTL, 'push', '--nar-listing', 'false', '--to', `file://${dir}`, chainTop]),
  ])) as [Measurement, Measurement];
  rows.push({ case: '', tool: 'nix copy to file:// on a tmpfs', ...chainNixTmpfs, rate: perPath(chainNixTmpfs) });
  rows.push({
    case: '',
    tool: 'cachectl push to file:// --nar-listing false, on a tmpfs',
    ...chainPushTmpfs,
    rate: perPath(chainPushTmpfs),
  });

  const wan = await farAway(s3);
  rows.push(...wan.rows);
  await s3.stop();

  const ratios = {
    bigVsNixCopy: nixCopy.seconds / push.seconds,
    bigVsFloor: push.seconds / floor.seconds,
    bigCpuSeconds: { push: push.cpuSeconds ?? Number.NaN, floor: floor.cpuSeconds ?? Number.NaN },
    bigListingCost: push.seconds / pushNoListing.seconds - 1,
    tinyListingCost: tinyFile.seconds / tinyFileNoListing.seconds - 1,
    tinyS3PathsPerSecond: tiny.length / tinyS3.seconds,
    chainVsNixCopy: chainNix.seconds / chainPushNoListing.seconds,
    chainWithListingsVsNixCopy: chainNixListing.seconds / chainPush.seconds,
    chainOnTmpfsVsNixCopy: chainNixTmpfs.seconds / chainPushTmpfs.seconds,
    bigFsyncCost: push.seconds / pushNoFsync.seconds - 1,
    chainFsyncCost: chainPushNoListing.seconds / chainPushNoFsync.seconds - 1,
    wan: wan.ratios,
    peakRssMb: Math.max(push.peakRssMb, tinyFile.peakRssMb, tinyS3.peakRssMb, bigFile.peakRssMb, bigS3.peakRssMb),
  };
  const results: PushResults = { ...thisRun(), narSize, runs: RUNS, rows, ratios };
  process.stdout.write(`\n${renderPush(results)}\n`);
  writeResults('push.json', results);
}

/** The round trips the far-away case is run at, ms. */
const DELAYS_MS = [0, 20, 30, 50];

/**
 * The closure of bench/wan-closure.nix pushed to s3rver through the latency proxy, by cachectl (s3://) and by
 * `nix copy` (http://, plain PUTs), at each of DELAYS_MS; each run into a fresh prefix of the bucket.
 */
async function farAway(
  s3: S3rver,
): Promise<{ rows: PushResults['rows']; ratios: NonNullable<PushResults['ratios']['wan']> }> {
  process.stderr.write(`building the ${values['wan-paths']}-path closure for the far-away case...\n`);
  const { stdout } = await execFileAsync(
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
  );
  const paths = stdout.trim().split('\n');
  const bytes = Number(
    (await execFileAsync('nix', [...pathInfoJsonArgs(), ...paths], { env, maxBuffer: 1 << 26 })).stdout
      .match(/"narSize":\d+/g)
      ?.reduce((sum, field) => sum + Number(field.slice(10)), 0),
  );
  const layers = Math.ceil(paths.length / Number(values['wan-width']));
  const closure = `${paths.length} paths in ${layers} layers, ${(bytes / 1e6).toFixed(0)} MB`;
  const proxy = await startLatencyProxy(s3.port, { delayMs: 0 });
  const rows: PushResults['rows'] = [];
  const seconds = new Map<string, number>();
  let prefixes = 0;
  try {
    for (const delayMs of DELAYS_MS) {
      process.stderr.write(`far away: ${delayMs} ms a request...\n`);
      proxy.delayMs = delayMs;
      const [nixCopy, push] = (await medians(
        () => `wan${prefixes++}`,
        [
          (prefix) =>
            measure('nix', ['copy', '--to', `${proxy.endpoint}/${s3.bucket}/${prefix}?compression=zstd`, ...paths]),
          (prefix) =>
            measure(
              process.execPath,
              [
                CACHECTL,
                'push',
                '--to',
                `s3://${s3.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1&prefix=${prefix}`,
                ...paths,
              ],
              testEnv(s3.env),
            ),
        ],
      )) as [Measurement, Measurement];
      const rate = (m: Measurement) => `${(bytes / 1e6 / m.seconds).toFixed(1)} MB/s`;
      const label = `${closure}, ${delayMs} ms a request`;
      rows.push({ case: label, tool: 'nix copy to http:// (s3rver)', ...nixCopy, peakRssMb: 0, rate: rate(nixCopy) });
      rows.push({ case: '', tool: 'cachectl push to s3://', ...push, rate: rate(push) });
      seconds.set(`nix ${delayMs}`, nixCopy.seconds);
      seconds.set(`push ${delayMs}`, push.seconds);
    }
  } finally {
    await proxy.stop();
  }
  const at = (key: string) => seconds.get(key) ?? Number.NaN;
  return {
    rows,
    ratios: {
      vsNixCopyAt30ms: at('nix 30') / at('push 30'),
      at50msVs0ms: at('push 50') / at('push 0'),
      closure,
    },
  };
}

await main();
