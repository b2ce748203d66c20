import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createSocket } from 'unix-dgram';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StatusReport } from '../../src/queue/status-report.js';
import { cachectl, CACHECTL, onExit, REPO, stopWhenDone, tempDir, testEnv } from './nix.js';

export const HOOK = join(REPO, 'hook/post-build-hook');

/** One pino log line of the daemon. */
export type LogLine = Record<string, unknown> & { msg: string; level: number };

export interface DaemonProcess {
  child: ChildProcess;
  logs: LogLine[];
  stderr(): string;
  /** the first log line (from `from` on) with this message that satisfies `match` */
  waitForLog(msg: string, match?: (line: LogLine) => boolean, timeoutMs?: number, from?: number): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `cachectl daemon ARGS` as a real child process, collecting its JSON log lines. */
export function startDaemon(args: readonly string[], env: NodeJS.ProcessEnv): DaemonProcess {
  const child = spawn(process.execPath, [CACHECTL, 'daemon', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: LogLine[] = [];
  let stderr = '';
  let partial = '';
  child.stdout?.on('data', (data: Buffer) => {
    partial += data.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ msg: `(not JSON) ${line}`, level: 60 });
      }
    }
  });
  child.stderr?.on('data', (data: Buffer) => (stderr += data.toString()));
  stopWhenDone(() => child.kill('SIGKILL'));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
    }),
  );
  return {
    child,
    logs,
    stderr: () => stderr,
    async waitForLog(msg, match = () => true, timeoutMs = 60_000, from = 0) {
      return waitFor(
        `daemon log "${msg}"`,
        () => logs.slice(from).find((line) => line.msg === msg && match(line)),
        timeoutMs,
        () => `stderr: ${stderr}\nlogs:\n${logs.map((line) => JSON.stringify(line)).join('\n')}`,
      );
    },
    exited,
  };
}

/** Polls `check` until it returns something other than undefined; fails after `timeoutMs` saying what it waited for. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 60_000,
  context: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${context()}`);
    await sleep(25);
  }
}

/**
 * A queue in a new temporary directory and a GC-roots directory Nix's collector really scans (under
 * /nix/var/nix/gcroots), removed when the test process exits, as the environment the hook, the daemon and
 * the CLI read. `extra` may name other roots.
 */
export function queueEnv(
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv & { CACHECTL_QUEUE: string; CACHECTL_GC_ROOTS: string } {
  let gcRoots = extra['CACHECTL_GC_ROOTS'];
  if (gcRoots === undefined) {
    const made = mkdtempSync('/nix/var/nix/gcroots/cachectl-test-');
    onExit(() => {
      rmSync(made, { recursive: true, force: true });
    });
    gcRoots = made;
  }
  return {
    ...testEnv(extra),
    CACHECTL_QUEUE: join(tempDir('queue'), 'queue.db'),
    CACHECTL_GC_ROOTS: gcRoots,
  };
}

export interface NotifyReceiver {
  socket: string;
  /** each datagram received, its lines joined with '|' */
  messages: string[];
  /** whether a message had a line starting with `field` (`READY=1`, `STATUS=idle`) */
  has: (field: string) => boolean;
  close(): void;
}

/** The receiving end of sd_notify, as systemd has it: a Unix datagram socket (through unix-dgram, as the daemon). */
export function notifyReceiver(): NotifyReceiver {
  const socket = join(tempDir('notify'), 'notify.sock');
  const receiver = createSocket('unix_dgram');
  const messages: string[] = [];
  receiver.on('message', (data: Buffer) => messages.push(data.toString().replace(/\n/g, '|')));
  receiver.bind(socket);
  let open = true;
  const close = () => {
    if (open) receiver.close();
    open = false;
  };
  stopWhenDone(close);
  return {
    socket,
    messages,
    has: (field) => messages.some((message) => message.split('|').some((part) => part.startsWith(field))),
    close,
  };
}

/** `cachectl status --json` for the queue of `env`. */
export async function queueStatus(env: NodeJS.ProcessEnv): Promise<StatusReport> {
  const result = await cachectl(['status', '--json'], env);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as StatusReport;
}

/**
 * Waits until nothing is waiting or uploading, at least `done` paths are done or failed, and a running daemon has
 * finished its batch (a root is marked done as soon as it is published, the daemon's counters once its batch ends).
 */
export function settled(env: NodeJS.ProcessEnv, done: number, timeoutMs = 120_000): Promise<StatusReport> {
  return waitFor(
    `${done} paths done`,
    async () => {
      const report = await queueStatus(env);
      const { pending, uploading, inbox, spoolFiles } = report.counts;
      const batchEnded = report.daemon.status?.state !== 'uploading';
      return pending + uploading + inbox + spoolFiles === 0 &&
        report.counts.done + report.counts.failed >= done &&
        batchEnded
        ? report
        : undefined;
    },
    timeoutMs,
  );
}

/**
 * SIGTERM, and the daemon must drain and exit 0. Sent once it is ready: a signal in its first moments, before it
 * has set up its handlers, ends it as the signal's default does (work is often done by then, now that each root is
 * done as soon as it is published).
 */
export async function stopDaemon(daemon: DaemonProcess): Promise<void> {
  await daemon.waitForLog('ready');
  daemon.child.kill('SIGTERM');
  assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.stderr());
}

/** The error a daemon log line carries, as pino's serializer writes it: type, message, stack, code, cause. */
export function errOf(line: LogLine): {
  type?: string;
  message?: string;
  stack?: string;
  code?: string;
  cause?: unknown;
} {
  const err = line['err'];
  return typeof err === 'object' && err !== null ? err : {};
}
