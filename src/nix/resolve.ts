import { lstat, readlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CachectlError } from '../core/errors.js';
import { parseStorePath } from '../core/store-path.js';

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
