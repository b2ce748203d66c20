/**
 * What signs narinfos and realisations: the key files (`--secret-key-file`), and an external signer
 * (`--signer-command`) for keys kept in an HSM or a secret service, which cachectl never sees.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Config } from '../core/config.js';
import { CachectlError } from '../core/errors.js';
import { loadSecretKeys } from './secret-keys.js';
import { sign, verifySignature, type PublicKey, type SecretKey } from '../core/signing.js';

export interface Signer {
  /** the public keys of its signatures: those of the key files, and those the command's are checked against */
  readonly publicKeys: readonly PublicKey[];
  /** `Sig:` values (`NAME:BASE64`) of `fingerprint`, one per key */
  sign(fingerprint: string): Promise<string[]>;
  close(): void;
}

/** How long the signer command may take to answer one fingerprint. */
const ANSWER_TIMEOUT_MS = 30_000;

/** The signer of a command's settings: its key files, loaded and checked, and its signer command. */
export async function openSigner(
  config: Pick<Config, 'secretKeyFiles' | 'signerCommand' | 'trustedPublicKeys'>,
): Promise<Signer> {
  return makeSigner(await loadSecretKeys(config.secretKeyFiles), config.signerCommand, config.trustedPublicKeys);
}

/** Signs with `keys`, and with `command` when given (its signatures checked against `commandKeys` first). */
export function makeSigner(
  keys: readonly SecretKey[],
  command?: string,
  commandKeys: readonly PublicKey[] = [],
): Signer {
  const external = command === undefined ? undefined : new CommandSigner(command, commandKeys);
  return {
    publicKeys: [
      ...keys.map((key) => ({ name: key.name, key: key.publicKey })),
      ...(external === undefined ? [] : commandKeys),
    ],
    async sign(fingerprint) {
      const own = keys.map((key) => sign(key, fingerprint));
      return external === undefined ? own : [...own, await external.sign(fingerprint)];
    },
    close() {
      external?.close();
    },
  };
}

/**
 * A long-running signer program (`sh -c COMMAND`), started at the first signature: a fingerprint per line on its
 * stdin, a `NAME:BASE64` signature per line on its stdout, in order. A signature that does not verify against a
 * key of its name is refused; a program that exits, or takes ANSWER_TIMEOUT_MS to answer, fails what waits on
 * it and is started again for the next signature.
 */
class CommandSigner {
  private child: ChildProcessWithoutNullStreams | undefined;
  private readonly waiting: { fingerprint: string; resolve(sig: string): void; reject(err: Error): void }[] = [];
  private stderr = '';

  constructor(
    private readonly command: string,
    private readonly keys: readonly PublicKey[],
  ) {}

  sign(fingerprint: string): Promise<string> {
    const child = this.child ?? this.start();
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(`it did not answer within ${ANSWER_TIMEOUT_MS / 1000} s`);
      }, ANSWER_TIMEOUT_MS);
      timer.unref();
      this.waiting.push({
        fingerprint,
        resolve: (sig) => {
          clearTimeout(timer);
          resolve(sig);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      child.stdin.write(`${fingerprint}\n`);
    });
  }

  close(): void {
    this.child?.stdin.end();
    this.child = undefined;
  }

  private start(): ChildProcessWithoutNullStreams {
    const child = spawn('/bin/sh', ['-c', this.command], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.stderr = '';
    child.stdin.on('error', () => undefined); // seen as its exit
    child.stderr.on('data', (chunk: Buffer) => (this.stderr = `${this.stderr}${chunk.toString()}`.slice(-500)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (this.child === child) this.answer(line.trim());
    });
    child.on('error', (err) => {
      if (this.child === child) this.fail(`it cannot be run: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.fail(`it exited (${signal ?? `status ${String(code)}`})`);
    });
    return child;
  }

  private answer(line: string): void {
    const request = this.waiting.shift();
    if (request === undefined) return;
    const name = line.slice(0, line.indexOf(':'));
    const named = this.keys.filter((key) => key.name === name);
    if (named.length === 0 || !verifySignature(named, request.fingerprint, line)) {
      request.reject(
        new CachectlError(
          'SIGNER_FAILED',
          `the signer command returned ${JSON.stringify(line.slice(0, 120))} for ${request.fingerprint}: ` +
            (named.length === 0
              ? `not NAME:SIGNATURE by a key of --trusted-public-key (${this.keys.map((key) => key.name).join(', ')})`
              : `it does not verify against the --trusted-public-key of ${name}`),
        ),
      );
      return;
    }
    request.resolve(line);
  }

  /** Fails every waiting signature, and stops the program: the next signature starts it again. */
  private fail(why: string): void {
    const child = this.child;
    this.child = undefined;
    if (child !== undefined && child.exitCode === null) child.kill();
    const stderr = this.stderr.trim();
    const error = new CachectlError(
      'SIGNER_FAILED',
      `the signer command (--signer-command) failed: ${why}${stderr === '' ? '' : `; it said: ${stderr}`}`,
      { retryable: true },
    );
    for (const request of this.waiting.splice(0)) request.reject(error);
  }
}
