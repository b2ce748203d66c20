import { mkdirSync } from 'node:fs';
import { basename } from 'node:path';
import { watch } from 'chokidar';
import { hookInboxFiles } from '../queue/schema.js';

/**
 * Lets the loop sleep until there may be work: `wake()` ends the current (or the next) `sleep`, so a wake-up
 * that comes while the loop is busy is not lost.
 */
export class Waker {
  private woken = false;
  private resolveSleep: (() => void) | undefined;

  wake(): void {
    this.woken = true;
    this.resolveSleep?.();
  }

  sleep(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.resolveSleep?.(), ms);
      this.resolveSleep = () => {
        clearTimeout(timer);
        this.resolveSleep = undefined;
        this.woken = false;
        resolve();
      };
    });
  }
}

/**
 * Calls `onChange` within milliseconds of a write to the queue or a hook inbox (their WAL files, where every
 * commit lands) or of a new spool file, through inotify. Resolves once watching; the result stops watching.
 *
 * The queue files are followed through chokidar's raw events: its filtered `change` events drop writes that
 * come in quick succession (measured: hooks 0.5 s apart were seen 1 s late or not at all). Reads touch only
 * the -shm file, which is not followed, so the daemon's own idle turns do not wake it.
 */
export async function watchQueue(
  queueFile: string,
  spoolDir: string,
  onChange: () => void,
): Promise<() => Promise<void>> {
  mkdirSync(spoolDir, { recursive: true, mode: 0o700 });
  const databases = [queueFile, ...hookInboxFiles(queueFile)];
  const files = databases.flatMap((file) => [file, `${file}-wal`]);
  const names = new Set(files.map((file) => basename(file)));
  const watcher = watch([...files, spoolDir], { ignoreInitial: true, atomic: false, depth: 0 });
  watcher.on('add', onChange);
  watcher.on('raw', (_event, path) => {
    if (names.has(basename(path))) onChange();
  });
  await new Promise<void>((resolve, reject) => {
    watcher.once('ready', resolve);
    watcher.once('error', reject);
  });
  return () => watcher.close();
}
