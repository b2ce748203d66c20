import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { onExit, REPO } from './nix.js';

export interface ShellResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What systemd says of a unit (`systemctl show`), the properties the tests look at. */
export interface UnitState {
  ActiveState: string;
  SubState: string;
  Result: string;
  NRestarts: number;
  StatusText: string;
  MainPID: number;
  ExecMainCode: string;
  ExecMainStatus: string;
}

const UNIT_PROPERTIES = [
  'ActiveState',
  'SubState',
  'Result',
  'NRestarts',
  'StatusText',
  'MainPID',
  'ExecMainCode',
  'ExecMainStatus',
];

/**
 * A throw-away machine with systemd as PID 1 (test/systemd/machine.sh): commands run inside it as root through
 * nsenter, in all of its namespaces. `close()` powers it off and removes it; so does the end of this process,
 * as the supervisor script sees its stdin close.
 */
export class Machine {
  private leader = 0;
  private readonly lines: string[] = [];
  private waiting: (() => void) | undefined;
  private log = '';
  private readonly exited: Promise<number | null>;

  private constructor(private readonly supervisor: ChildProcessWithoutNullStreams) {
    let partial = '';
    supervisor.stdout.on('data', (data: Buffer) => {
      partial += data.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      this.lines.push(...lines);
      this.waiting?.();
    });
    supervisor.stderr.on('data', (data: Buffer) => {
      this.log += data.toString();
      process.stderr.write(data);
    });
    this.exited = new Promise((resolve) =>
      supervisor.once('exit', (code) => {
        resolve(code);
        this.waiting?.();
      }),
    );
  }

  /**
   * Prepares the overlay of `root` (this machine's, or the sid root's) with nix-setup-systemd and the package
   * installed; resolves when it can boot.
   */
  static async prepare(root = '/'): Promise<Machine> {
    // Its own process group: a signal meant for the tests' group (Ctrl-C) must not cut its cleanup short; it
    // cleans up when our end of its stdin closes.
    const supervisor = spawn('bash', [join(REPO, 'test/systemd/machine.sh'), REPO, root], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    onExit(() => supervisor.stdin.end());
    const machine = new Machine(supervisor);
    await machine.reply('prepared', 600_000);
    return machine;
  }

  /** Boots it; resolves once systemd has finished starting up. */
  async boot(): Promise<void> {
    this.supervisor.stdin.write('boot\n');
    this.leader = Number(await this.reply('booted', 120_000));
  }

  /** `systemctl poweroff -ff` inside: every process ends at once, nothing is stopped in order (a power cut). */
  async powerCut(): Promise<void> {
    await this.sh('systemctl poweroff -ff');
    this.supervisor.stdin.write('wait-off\n');
    await this.reply('off', 120_000);
    this.leader = 0;
  }

  async close(): Promise<void> {
    this.supervisor.stdin.end();
    await this.exited;
  }

  /** Runs a bash script inside the machine as root (`set -euo pipefail`), with a clean environment. */
  sh(script: string, timeoutMs = 300_000): Promise<ShellResult> {
    if (this.leader === 0) throw new Error('the machine is not running');
    const child = spawn(
      'nsenter',
      [
        `--target=${this.leader}`,
        '--all',
        '--root',
        '--wd',
        '--',
        '/usr/bin/env',
        '-i',
        'PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'HOME=/root',
        'LC_ALL=C.UTF-8',
        'NIX_REMOTE=daemon',
        '/bin/bash',
        '-euo',
        'pipefail',
        '-c',
        script,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    ); // stdin not a socket: bash would read bashrc files as if run by sshd
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(
          new Error(`timed out after ${timeoutMs} ms in the machine: ${script}\nstdout: ${stdout}\nstderr: ${stderr}`),
        );
      }, timeoutMs);
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }

  /** Like `sh`, but fails unless the script exits 0; returns its stdout. */
  async ok(script: string, timeoutMs?: number): Promise<string> {
    const result = await this.sh(script, timeoutMs);
    if (result.code !== 0)
      throw new Error(
        `exit ${result.code} in the machine: ${script}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
      );
    return result.stdout;
  }

  async unit(name: string): Promise<UnitState> {
    const text = await this.ok(`systemctl show -p ${UNIT_PROPERTIES.join(',')} ${name}`);
    const values = new Map(
      text
        .trimEnd()
        .split('\n')
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    const state = Object.fromEntries(UNIT_PROPERTIES.map((property) => [property, values.get(property) ?? '']));
    return { ...state, NRestarts: Number(state['NRestarts']), MainPID: Number(state['MainPID']) } as UnitState;
  }

  private async reply(word: string, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.lines.findIndex((line) => line.startsWith(`${word} `));
      if (index >= 0) return (this.lines.splice(index, 1)[0] as string).slice(word.length + 1);
      if (this.supervisor.exitCode !== null)
        throw new Error(`test/systemd/machine.sh exited ${this.supervisor.exitCode} before "${word}":\n${this.log}`);
      if (Date.now() > deadline)
        throw new Error(`test/systemd/machine.sh said no "${word}" in ${timeoutMs} ms:\n${this.log}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}
