import { readFile, stat } from 'node:fs/promises';
import { CachectlError } from '../core/errors.js';
import { parseSecretKey, type SecretKey } from '../core/signing.js';

/**
 * Reads Nix-format secret keys from files. A key file that group or others may read or write is refused:
 * a signing key is the cache's whole trust. Errors name the file, never its content.
 */
export async function loadSecretKeys(files: readonly string[]): Promise<SecretKey[]> {
  const keys: SecretKey[] = [];
  for (const file of files) {
    let text: string;
    try {
      const info = await stat(file);
      if (!info.isFile()) throw new Error('not a regular file');
      if ((info.mode & 0o077) !== 0) {
        throw new CachectlError(
          'SECRET_KEY_PERMISSIONS',
          `secret key file ${file} is accessible to group or others (mode ${(info.mode & 0o777).toString(8)}); run: ` +
            `chmod 600 ${file}`,
        );
      }
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (err instanceof CachectlError) throw err;
      throw new CachectlError(
        'SECRET_KEY_UNREADABLE',
        `cannot read secret key file ${file}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    keys.push(parseSecretKey(text, file));
  }
  return keys;
}
