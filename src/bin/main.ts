// The cachectl program, started by bin/cachectl.cts: with it, the only place that touches argv, env, the terminal
// and the exit code.
import { readFileSync, writeSync } from 'node:fs';
import { Command, Option } from 'commander';
import { resolveConfig, type Config } from '../core/config.js';
import { ENV_NAMES, OPTIONS, optionHelp, type ConfigFlags, type OptionKey, type OptionSpec } from '../core/options.js';
import { CachectlError, errorText } from '../core/errors.js';
import { formatBytes, showProgress } from '../cli/progress.js';
import type { GcRun } from '../queue/gc-runs.js';
// Each command imports its own modules when it runs (`await import`): a push does not load the daemon's, the
// GC's and the logger's, which took a third of its start-up.

/** Failures printed one by one; the rest are counted (--json lists them all). */
const FAILURES_SHOWN = 10;

/** Commander's flag values: the settings by their flags' attribute names, and the command's own flags. */
type CommonFlags = Record<string, unknown> & { json?: boolean };

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The settings each command takes, declared in core/options.ts. */
const PUSH_SETTINGS: readonly OptionKey[] = [
  'to',
  'secretKeyFiles',
  'signerCommand',
  'trustedPublicKeys',
  'jobs',
  'compression',
  'narListing',
  'skipSignedBy',
  'cacheControl',
  'contentType',
  'config',
];
const QUEUE_SETTINGS: readonly OptionKey[] = ['queue', 'gcRoots', 'config'];
const CACHE_SETTINGS: readonly OptionKey[] = ['to', 'config'];

function withSettings(command: Command, keys: readonly OptionKey[]): Command {
  for (const key of keys) {
    const spec: OptionSpec = OPTIONS[key];
    const option = new Option(spec.flag, optionHelp(key));
    command.addOption(spec.listSeparator === undefined ? option : option.argParser(collect));
  }
  return command;
}

/** The settings among commander's values, by their keys in core/options.ts. */
function settingsOf(flags: CommonFlags): ConfigFlags {
  const settings: Record<string, string | string[]> = {};
  for (const [key, spec] of Object.entries(OPTIONS)) {
    // A string, or a list for a repeatable flag (collect): what commander holds for a flag given.
    const value = flags[new Option(spec.flag).attributeName()];
    if (typeof value === 'string') settings[key] = value;
    else if (Array.isArray(value)) settings[key] = value.map(String);
  }
  return settings;
}

function loadConfig(flags: CommonFlags): Config {
  const settings = settingsOf(flags);
  const file = settings.config ?? process.env[ENV_NAMES.config];
  let fileContent: { name: string; text: string } | undefined;
  if (file !== undefined && file !== '') {
    try {
      fileContent = { name: file, text: readFileSync(file, 'utf8') };
    } catch (err) {
      throw new CachectlError('CONFIG_INVALID', `cannot read config file ${file}: ${errorText(err)}`);
    }
  }
  return resolveConfig(settings, process.env, fileContent);
}

function failureText(err: unknown): string {
  return err instanceof CachectlError ? err.message : `internal error: ${errorText(err)}`;
}

function fail(err: unknown): never {
  const message = failureText(err);
  // Written synchronously: to a pipe or socket (journald) process.stderr writes later, and exit would drop it.
  writeSync(
    2,
    message
      .split('\n')
      .map((line) => `cachectl: ${line}\n`)
      .join(''),
  );
  process.exit(1);
}

// The SDK version is pinned on purpose; its notice about future Node versions is not the user's concern.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

const program = new Command('cachectl')
  .version(version)
  .description('Upload what Nix builds to a binary cache (S3 or a directory), and keep that cache small.')
  .showHelpAfterError('(run cachectl --help for usage)');

withSettings(
  program
    .command('push')
    .description(
      'Upload the closures of store paths to the cache now, in the foreground, like `nix copy --to` but in parallel. ' +
        'Paths the cache already has are skipped; each narinfo is published only after its NAR and its references.',
    )
    .argument('[paths...]', 'store paths, or links to them such as ./result; a .drv stands for its outputs'),
  PUSH_SETTINGS,
)
  .option('--json', 'print the result as JSON')
  .option(
    '--stdin',
    'read the paths from stdin, one per line, and print a JSON line for each as soon as it is published or ' +
      'fails; lines read while a batch uploads form the next batch',
  )
  .addHelpText(
    'after',
    `
Examples:
  cachectl push --to file:///var/cache/nix ./result
  cachectl push --to 's3://my-cache?region=eu-west-1' --secret-key-file /etc/nix/cache.sec ./result
  cachectl push --to 's3://nix?endpoint=https://ACCOUNT.r2.cloudflarestorage.com&region=auto' /nix/store/...-hello
  nix-build --no-out-link ... | cachectl push --stdin --to file:///var/cache/nix

With --stdin, each line printed is {"input", "path", "batch", "seconds", "ok": true, "state": "uploaded" or
"present"} or {..., "ok": false, "code", "message"}; a summary goes to stderr at the end.

Progress (paths, bytes, rate) is shown on a terminal; otherwise one summary line. Exit status 1 when any
path failed; the paths that reference a failed path are not published, so the cache stays consistent.`,
  )
  .action(async (paths: string[], flags: CommonFlags & { stdin?: boolean }) => {
    try {
      const config = loadConfig(flags);
      if (flags.stdin === true) {
        if (paths.length > 0)
          throw new CachectlError('CONFIG_INVALID', 'give paths as arguments or with --stdin, not both');
        const { createInterface } = await import('node:readline');
        const { pushStdinCommand } = await import('../cli/push.js');
        // Read from here on, in the same turn: readline drops the lines that come before anyone listens.
        const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
        const { paths: answered, failed } = await pushStdinCommand(lines, config, (line) => {
          process.stdout.write(`${JSON.stringify(line)}\n`);
        });
        process.stderr.write(`cachectl: ${answered} paths from stdin, ${failed} failed\n`);
        if (failed > 0) process.exitCode = 1;
        return;
      }
      if (paths.length === 0)
        throw new CachectlError('CONFIG_INVALID', 'no paths to push: give store paths, or --stdin to read them');
      const { pushCommand } = await import('../cli/push.js');
      const { newProgress } = await import('../upload/push.js');
      const progress = newProgress();
      const display = process.stderr.isTTY && flags.json !== true ? showProgress(process.stderr, progress) : undefined;
      let result;
      try {
        result = await pushCommand(paths, config, progress);
      } finally {
        display?.stop();
      }
      if (flags.json === true) {
        process.stdout.write(`${JSON.stringify(result)}\n`);
      } else {
        const rate = result.seconds > 0 ? result.narBytes / result.seconds : 0;
        process.stdout.write(
          `pushed ${result.uploaded.length} paths (${formatBytes(result.narBytes)} NAR, ` +
            `${formatBytes(result.fileBytes)} ` +
            `${config.compression}) to ${result.cache} in ${result.seconds.toFixed(1)} s (${formatBytes(rate)}/s); ` +
            `${result.alreadyPresent} of ${result.closurePaths} already there` +
            (result.skippedSignedBy > 0 ? `; ${result.skippedSignedBy} left to the caches that signed them` : '') +
            (result.repaired.length > 0
              ? `; ${result.repaired.length} uploaded again after a concurrent GC removed them`
              : '') +
            (result.failed.length > 0 ? `; ${result.failed.length} FAILED` : '') +
            '\n',
        );
        // A cache outage fails every path alike: the first few say it.
        for (const failure of result.failed.slice(0, FAILURES_SHOWN))
          process.stderr.write(`cachectl: ${failure.message}\n`);
        if (result.failed.length > FAILURES_SHOWN) {
          process.stderr.write(
            `cachectl: … and ${result.failed.length - FAILURES_SHOWN} more failures (--json lists them all)\n`,
          );
        }
      }
      if (result.failed.length > 0) process.exitCode = 1;
    } catch (err) {
      fail(err);
    }
  });

withSettings(
  program
    .command('daemon')
    .description(
      'Run the uploader: take the paths the post-build hook (or cachectl enqueue) queues and upload their closures, ' +
        'retrying failures, pausing while the cache is down or throttling. Logs JSON lines to stdout; speaks ' +
        'sd_notify under systemd (Type=notify). SIGTERM drains: uploads in flight finish (or go back to the queue), ' +
        'then it exits 0.',
    ),
  [...PUSH_SETTINGS, 'queue', 'gcRoots', 'metricsListen'],
)
  .addHelpText(
    'after',
    `
Example:
  cachectl daemon --to 's3://my-cache?region=eu-west-1' --secret-key-file /etc/nix/cache.sec --metrics-listen 9108

systemd/cachectl.service runs: cachectl daemon --config /etc/cachectl/config.json --secret-key-file %d/signing-key

Then add to nix.conf:  post-build-hook = ${new URL('../../../hook/post-build-hook', import.meta.url).pathname}`,
  )
  .action(async (flags: CommonFlags) => {
    try {
      const config = loadConfig(flags);
      const { pino } = await import('pino');
      const { openDaemon } = await import('../cli/daemon.js');
      const { DRAIN_MS } = await import('../daemon/daemon.js');
      const log = pino(
        { base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
        pino.destination({ fd: 1, sync: true }),
      );
      const abandon = new AbortController();
      const { daemon, close } = await openDaemon(config, log, process.env, abandon.signal);
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals): void => {
        signals += 1;
        if (signals > 1) {
          // The queue stays consistent: the leases of whatever was in flight send it back to pending.
          log.warn({ signal }, 'second signal: exiting without draining');
          process.exit(1);
        }
        log.info({ signal }, 'stopping');
        daemon.stop();
        // Uploads still in flight when the drain time is up are abandoned: they stop, their paths go back to the queue.
        setTimeout(() => {
          abandon.abort();
        }, DRAIN_MS).unref();
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      await daemon.run();
      log.info('stopped');
      await close();
      // An abandoned upload may still hold a handle (a compressor thread): its work is not waited for.
      process.exit(0);
    } catch (err) {
      // systemctl status shows why: journald may file the stderr of a process that exits at once under no unit.
      const { systemdNotifier } = await import('../daemon/notify.js');
      systemdNotifier(process.env, () => undefined)?.notify({
        STATUS: `failed: ${failureText(err).split('\n')[0] ?? ''}`,
      });
      fail(err);
    }
  });

withSettings(
  program
    .command('enqueue')
    .description(
      'Queue store paths for the daemon to upload, as the post-build hook does; they stay GC roots until uploaded.',
    )
    .argument('<paths...>', 'store paths, or links to them such as ./result; a .drv stands for its outputs'),
  QUEUE_SETTINGS,
).action(async (paths: string[], flags: CommonFlags) => {
  try {
    const config = loadConfig(flags);
    const { enqueueCommand } = await import('../cli/enqueue.js');
    const queued = await enqueueCommand(paths, config);
    process.stdout.write(`queued ${queued.length} paths in ${config.queue}\n`);
  } catch (err) {
    fail(err);
  }
});

withSettings(
  program
    .command('status')
    .description(
      'Show the queue: paths by state, how long the oldest has waited, the upload rate, whether the daemon runs, ' +
        'and the failed paths with their last error.',
    ),
  QUEUE_SETTINGS,
)
  .option('--json', 'print the status as JSON (one object; one per line with --watch)')
  .option('--watch', 'repeat every second until interrupted')
  .action(async (flags: CommonFlags & { watch?: boolean }) => {
    try {
      const config = loadConfig(flags);
      const { formatStatus, readStatus } = await import('../cli/status.js');
      const show = (): void => {
        const report = readStatus(config);
        if (flags.json === true) process.stdout.write(`${JSON.stringify(report)}\n`);
        else
          process.stdout.write(
            `${flags.watch === true && process.stdout.isTTY ? '\x1b[H\x1b[J' : ''}${formatStatus(report)}`,
          );
      };
      show();
      if (flags.watch === true) setInterval(show, 1000);
    } catch (err) {
      fail(err);
    }
  });

withSettings(
  program
    .command('retry')
    .description(
      'Put failed paths back in the queue with fresh attempts (after fixing what cachectl status says went wrong).',
    )
    .argument('[paths...]', 'failed store paths (or links to them)'),
  QUEUE_SETTINGS,
)
  .option('--all', 'retry every failed path')
  .action(async (paths: string[], flags: CommonFlags & { all?: boolean }) => {
    try {
      const config = loadConfig(flags);
      const { retryCommand } = await import('../cli/retry.js');
      const retried = await retryCommand(paths, flags.all === true, config);
      process.stdout.write(`retrying ${retried.length} paths\n`);
    } catch (err) {
      fail(err);
    }
  });

withSettings(
  program
    .command('gc')
    .description(
      'Delete from the cache what nothing needs any more: narinfos outside the closures of the pins, of recent ' +
        'uploads and of what writers are uploading now, their NARs, orphaned NARs and logs. Safe while daemons and ' +
        'pushes keep uploading. An unreachable object is first marked, and deleted by a later run once marked for ' +
        'the grace period. When this machine has a queue (--queue), the summary of the run is kept there for ' +
        'cachectl status and the metrics.',
    ),
  ['to', 'olderThan', 'grace', 'jobs', 'metadataCache', 'queue', 'config'],
)
  .option('--dry-run', 'print what would be deleted, and change nothing')
  .option('--json', 'print the report as JSON')
  .addHelpText(
    'after',
    `
Examples:
  cachectl gc --to 's3://my-cache?region=eu-west-1' --dry-run
  cachectl gc --to file:///var/cache/nix --older-than 2160h --grace 1h`,
  )
  .action(async (flags: CommonFlags & { dryRun?: boolean }) => {
    try {
      const config = loadConfig(flags);
      const showNotes = process.stderr.isTTY && flags.json !== true;
      const { formatGcReport, gcCommand, recordGcRun } = await import('../cli/gc.js');
      const onRun = (run: GcRun): void => {
        const problem = recordGcRun(config.queue, run);
        if (problem !== undefined) process.stderr.write(`cachectl: ${problem}\n`);
      };
      const report = await gcCommand(
        flags,
        config,
        process.env,
        showNotes ? (text) => process.stderr.write(`\r\x1b[K${text}`) : undefined,
        onRun,
      );
      if (showNotes) process.stderr.write('\r\x1b[K');
      process.stdout.write(flags.json === true ? `${JSON.stringify(report)}\n` : formatGcReport(report));
      if (report.stopped !== undefined) process.exitCode = 1;
    } catch (err) {
      fail(err);
    }
  });

withSettings(
  program
    .command('verify')
    .description(
      "Check the whole cache the way Nix's readers see it, with no local store needed: every narinfo parses by " +
        "Nix's rules, its NAR is there with its FileSize, every reference has a narinfo, signatures verify with " +
        'the trusted keys, and every listing, realisation and build trace belongs to a narinfo. Works on caches ' +
        'written by `nix copy` too. What would make Nix fail or loses data is a problem; the rest (an orphan ' +
        'listing or log, a realisation signed by no trusted key, which no Nix checks) is a warning. Exit ' +
        'status 1 when a problem remains (with --strict, a warning too).',
    ),
  [
    'to',
    'trustedPublicKeys',
    'jobs',
    'secretKeyFiles',
    'signerCommand',
    'compression',
    'narListing',
    'cacheControl',
    'contentType',
    'config',
  ],
)
  .option('--deep', 'also read every NAR: its FileHash, and the NarHash and NarSize of what it decompresses to')
  .option(
    '--repair',
    'upload again from the local store what is broken or missing (signed with --secret-key-file or ' +
      '--signer-command), delete orphan listings, then check again; what the local store lacks is named',
  )
  .option('--strict', 'count warnings as problems: for the exit status, and for what --repair takes on')
  .option('--json', 'print the report as JSON')
  .addHelpText(
    'after',
    `
Examples:
  cachectl verify --to file:///var/cache/nix --trusted-public-key "$(cat /etc/nix/cache.pub)"
  cachectl verify --to 's3://my-cache?region=eu-west-1' --deep --repair --secret-key-file /etc/nix/cache.sec \\
    --trusted-public-key cache.example.org-1:...

Safe while daemons push and a GC runs: what looks missing is looked up again before it is reported, and
a repair holds a lease like any push.`,
  )
  .action(async (flags: CommonFlags & { deep?: boolean; repair?: boolean; strict?: boolean }) => {
    try {
      const config = loadConfig(flags);
      const showProgress = process.stderr.isTTY && flags.json !== true;
      const { formatVerifyReport, verifyCommand, verifyPassed } = await import('../cli/verify.js');
      const result = await verifyCommand(
        flags,
        config,
        showProgress ? (text) => process.stderr.write(`\r\x1b[K${text}`) : undefined,
      );
      if (showProgress) process.stderr.write('\r\x1b[K');
      process.stdout.write(flags.json === true ? `${JSON.stringify(result)}\n` : formatVerifyReport(result));
      if (!verifyPassed(result)) process.exitCode = 1;
    } catch (err) {
      fail(err);
    }
  });

withSettings(
  program
    .command('pin')
    .description(
      'Keep store paths and their closures in the cache whatever their age: a GC root in the bucket (gcroots/NAME), ' +
        'replacing what NAME held.',
    )
    .argument('<name>', "the pin's name: letters, digits, '.', '_', '-'")
    .argument('<paths...>', 'store paths the cache has, or links to them such as ./result'),
  CACHE_SETTINGS,
).action(async (name: string, paths: string[], flags: CommonFlags) => {
  try {
    const { pinCommand } = await import('../cli/pins.js');
    const pinned = await pinCommand(name, paths, loadConfig(flags));
    process.stdout.write(`pinned ${pinned.length} paths as ${name}\n`);
  } catch (err) {
    fail(err);
  }
});

withSettings(
  program
    .command('unpin')
    .description('Remove a pin; the next GC may then collect what only it kept.')
    .argument('<name>', 'the pin'),
  CACHE_SETTINGS,
).action(async (name: string, flags: CommonFlags) => {
  try {
    const { unpinCommand } = await import('../cli/pins.js');
    await unpinCommand(name, loadConfig(flags));
    process.stdout.write(`unpinned ${name}\n`);
  } catch (err) {
    fail(err);
  }
});

withSettings(
  program.command('pins').description('List the pins of the cache and the paths each keeps.'),
  CACHE_SETTINGS,
)
  .option('--json', 'print the pins as JSON')
  .action(async (flags: CommonFlags) => {
    try {
      const { pinsCommand } = await import('../cli/pins.js');
      const pins = await pinsCommand(loadConfig(flags));
      if (flags.json === true) process.stdout.write(`${JSON.stringify(pins)}\n`);
      else
        for (const { name, paths, problems } of pins)
          process.stdout.write(`${name}\n${[...paths, ...problems].map((line) => `  ${line}\n`).join('')}`);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('keygen')
  .description(
    "Create an Ed25519 signing key pair in Nix's format (compatible with `nix key generate-secret`). " +
      'The secret key goes only to a new file of mode 0600; the public key, for trusted-public-keys, is printed.',
  )
  .argument('<name>', 'key name, conventionally the cache host name and a number: cache.example.org-1')
  .requiredOption('--secret-key-file <file>', 'the secret key file to create')
  .option('--public-key-file <file>', 'the public key file to create (default: the secret key file + .pub)')
  .action(async (name: string, flags: { secretKeyFile: string; publicKeyFile?: string }) => {
    try {
      const { keygenCommand } = await import('../cli/keygen.js');
      const result = await keygenCommand(
        name,
        flags.secretKeyFile,
        flags.publicKeyFile ?? `${flags.secretKeyFile}.pub`,
      );
      process.stdout.write(`${result.publicKey}\n`);
    } catch (err) {
      fail(err);
    }
  });

await program.parseAsync(process.argv);
