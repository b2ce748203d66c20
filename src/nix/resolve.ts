import { lstat, readlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CachectlError } from '../core/errors.js';
import { parseStorePath } from '../core/store-path.js';
import type { LocalStore } from './local-store.js';

const MAX_LINKS = 40;

/**
 * The store path an argument names: a store path itself, or a symlink chain outside the store that leads to
 * one (`./result`). Links inside the store are not followed: a store path may itself be a symlink.
 */
export async function resolveStorePath(arg: string, storeDir: string): Promise<string> {
  let path = resolve(arg);
  for (let hops = 0; hops <= MAX_LINKS; hops++) {
    if (path.startsWith(`${storeDir}/`)) return parseStorePath(path, storeDir).path;
    let isLink: boolean;
    try {
      isLink = (await lstat(path)).isSymbolicLink();
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : (err as Error).message;
      throw new CachectlError(
        'PATH_NOT_IN_STORE',
        `${JSON.stringify(arg)} is not in the Nix store ${storeDir}: ${why}`,
      );
    }
    if (!isLink) {
      throw new CachectlError(
        'PATH_NOT_IN_STORE',
        `${JSON.stringify(arg)} is not in the Nix store ${storeDir}; pass a store path or a link to one (such as ` +
          `./result)`,
      );
    }
    path = resolve(dirname(path), await readlink(path));
  }
  throw new CachectlError('PATH_NOT_IN_STORE', `${JSON.stringify(arg)}: more than ${MAX_LINKS} symlinks to follow`);
}

/**
 * The store paths command-line arguments stand for: each a store path or a link to one, a derivation standing
 * for its outputs (as for `nix copy` and `nix build`). A derivation without valid outputs fails, naming the fix.
 */
export async function resolveArguments(
  args: readonly string[],
  store: Pick<LocalStore, 'storeDir' | 'queryDerivationOutputs'>,
): Promise<string[]> {
  const paths: string[] = [];
  for (const arg of args) {
    const path = await resolveStorePath(arg, store.storeDir);
    if (!path.endsWith('.drv')) {
      paths.push(path);
      continue;
    }
    const outputs = store.queryDerivationOutputs(path);
    if (outputs.length === 0) {
      throw new CachectlError(
        'PATH_NOT_VALID',
        `the derivation ${path} has no valid outputs in the local Nix store; build it first (nix-build ${path})`,
      );
    }
    paths.push(...outputs);
  }
  return paths;
}
