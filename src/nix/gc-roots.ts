import { mkdirSync, readdirSync, renameSync, symlinkSync, unlinkSync } from 'node:fs';
import { basename, join } from 'node:path';

/**
 * Makes each path a GC root: a symlink named after it in `dir` (a directory under Nix's gcroots, which the
 * collector scans), so `nix-collect-garbage` keeps it and its closure until the link goes.
 */
export function addGcRoots(dir: string, storePaths: readonly string[]): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const storePath of storePaths) {
    const link = join(dir, basename(storePath));
    const temp = `${link}.tmp-${process.pid}`;
    symlinkSync(storePath, temp);
    renameSync(temp, link);
  }
}

/** The store paths rooted in `dir`. */
export function listGcRoots(dir: string, storeDir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((name) => !name.includes('.tmp-'))
      .map((name) => `${storeDir}/${name}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export function removeGcRoots(dir: string, storePaths: readonly string[]): void {
  for (const storePath of storePaths) {
    try {
      unlinkSync(join(dir, basename(storePath)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}
