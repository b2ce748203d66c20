import { open, unlink, type FileHandle } from 'node:fs/promises';
import { CachectlError } from '../core/errors.js';
import { formatPublicKey, formatSecretKey, generateSecretKey } from '../core/signing.js';

export interface KeygenResult {
  publicKey: string;
  secretKeyFile: string;
  publicKeyFile: string;
}

/**
 * `cachectl keygen NAME`: a new Ed25519 key pair in Nix's format. The secret goes only to a new file of mode
 * 0600 (never to the terminal); the public key is returned for printing and written beside it.
 */
export async function keygenCommand(name: string, secretKeyFile: string, publicKeyFile: string): Promise<KeygenResult> {
  const key = generateSecretKey(name);
  const secretHandle = await createNew(secretKeyFile, 0o600);
  try {
    const publicHandle = await createNew(publicKeyFile, 0o644).catch(async (err: unknown) => {
      await secretHandle.close();
      await unlink(secretKeyFile);
      throw err;
    });
    await publicHandle.writeFile(`${formatPublicKey(key)}\n`);
    await publicHandle.close();
    await secretHandle.writeFile(formatSecretKey(key));
  } finally {
    await secretHandle.close().catch(() => undefined);
  }
  return { publicKey: formatPublicKey(key), secretKeyFile, publicKeyFile };
}

async function createNew(file: string, mode: number): Promise<FileHandle> {
  try {
    return await open(file, 'wx', mode);
  } catch (err) {
    const why =
      (err as NodeJS.ErrnoException).code === 'EEXIST'
        ? 'it already exists; remove it or choose another file'
        : (err as Error).message;
    throw new CachectlError('CONFIG_INVALID', `cannot create key file ${file}: ${why}`, { cause: err });
  }
}
