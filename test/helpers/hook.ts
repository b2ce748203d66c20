import { spawn } from 'node:child_process';
import Database from 'better-sqlite3';
import { Queue } from '../../src/queue/queue.js';
import { hookInboxFiles } from '../../src/queue/schema.js';
import { HOOK } from './daemon.js';

export interface HookRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export function runHook(env: NodeJS.ProcessEnv, hookEnv: { OUT_PATHS?: string; DRV_PATH?: string }): Promise<HookRun> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(HOOK, [], {
      env: { ...env, OUT_PATHS: hookEnv.OUT_PATHS ?? '', DRV_PATH: hookEnv.DRV_PATH ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      resolve({ code: code ?? -1, stdout, stderr, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
  });
}

/** The store paths written to one inbox file, in order. */
export function inboxOf(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare('SELECT store_path FROM inbox ORDER BY id').all() as { store_path: string }[]).map(
      (row) => row.store_path,
    );
  } finally {
    db.close();
  }
}

/** The store paths written to the queue's inboxes, in order within each. */
export function inbox(queueFile: string): string[] {
  return [queueFile, ...hookInboxFiles(queueFile)].flatMap(inboxOf);
}

/** A queue as the daemon leaves it for hooks: created and migrated. */
export function createQueue(env: { CACHECTL_QUEUE: string }): string {
  Queue.open(env.CACHECTL_QUEUE).close();
  return env.CACHECTL_QUEUE;
}
