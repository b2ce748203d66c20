import type { Logger } from 'pino';
import { parseStorePath } from '../core/store-path.js';
import type { LocalStore } from '../nix/local-store.js';
import type { NewPath, Paths } from '../queue/paths.js';
import { readSpool, removeSpoolFiles } from '../queue/spool.js';

/** Takes what hooks queued into the queue: the inbox files, and the spool the hook writes when it cannot. */
export class Intake {
  constructor(
    private readonly paths: Paths,
    private readonly spoolDir: string,
    private readonly store: Pick<LocalStore, 'storeDir' | 'queryDerivationOutputs'>,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

  /** Never throws: what cannot be taken in now stays where it is for the next turn. */
  takeIn(): void {
    try {
      const taken = this.paths.ingestInbox();
      if (taken > 0) this.log.debug({ paths: taken }, 'took paths from the inbox');
      this.takeInSpool();
    } catch (err) {
      this.log.error({ err }, 'cannot take in queued paths');
    }
  }

  private takeInSpool(): void {
    const spool = readSpool(this.spoolDir);
    if (spool.files.length === 0) return;
    for (const problem of spool.problems) this.log.warn({ line: problem }, 'ignoring a malformed spool line');
    const now = this.now();
    const paths: NewPath[] = [];
    for (const entry of spool.entries) {
      try {
        parseStorePath(entry.path, this.store.storeDir);
      } catch (err) {
        this.log.warn({ path: entry.path, err }, 'ignoring a spooled path that is not a store path');
        continue;
      }
      if (entry.kind === 'out') {
        paths.push({ storePath: entry.path, source: 'hook', enqueuedAt: now });
        continue;
      }
      const outputs = this.store.queryDerivationOutputs(entry.path);
      if (outputs.length === 0) {
        this.paths.addFailed(
          { storePath: entry.path, source: 'hook', enqueuedAt: now },
          {
            code: 'PATH_NOT_VALID',
            message: `the derivation ${entry.path} has no valid outputs in the local store; build it again`,
          },
        );
      }
      for (const output of outputs) paths.push({ storePath: output, source: 'hook', enqueuedAt: now });
    }
    this.paths.add(paths);
    removeSpoolFiles(spool.files);
    this.log.info({ files: spool.files.length, paths: paths.length }, 'took paths from the spool');
  }
}
