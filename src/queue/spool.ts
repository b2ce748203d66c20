import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The spool: files the hook writes when it cannot use the queue (missing, locked, broken), one line each
 * `out STORE-PATH` (a built path) or `drv DRV-PATH` (upload its outputs; the hook could not find them).
 * Files are complete once they have a name without a leading dot.
 */
export interface SpoolEntry {
  kind: 'out' | 'drv';
  path: string;
}

export interface SpoolContent {
  files: string[];
  entries: SpoolEntry[];
  /** lines that are neither, with their file, for the log */
  problems: string[];
}

/** The spool directory of a queue file (what the hook computes as "$CACHECTL_QUEUE.spool"). */
export function spoolDirOf(queueFile: string): string {
  return `${queueFile}.spool`;
}

export function readSpool(dir: string): SpoolContent {
  const content: SpoolContent = { files: [], entries: [], problems: [] };
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return content;
    throw err;
  }
  for (const name of names.filter((n) => !n.startsWith('.')).sort()) {
    const file = join(dir, name);
    content.files.push(file);
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line === '') continue;
      const match = /^(out|drv) (\S+)$/.exec(line);
      if (match === null) content.problems.push(`${file}: ${JSON.stringify(line)}`);
      else content.entries.push({ kind: match[1] as 'out' | 'drv', path: match[2] as string });
    }
  }
  return content;
}

/** Removes spool files once their paths are in the queue. */
export function removeSpoolFiles(files: readonly string[]): void {
  for (const file of files) {
    try {
      unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

/** Spool files not yet taken in. */
export function countSpoolFiles(dir: string): number {
  try {
    return readdirSync(dir).filter((name) => !name.startsWith('.')).length;
  } catch {
    return 0;
  }
}
