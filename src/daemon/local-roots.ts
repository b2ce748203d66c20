import type { Logger } from 'pino';
import { listGcRoots, removeGcRoots } from '../nix/gc-roots.js';
import type { Paths } from '../queue/paths.js';

/**
 * The local store's GC roots of queued paths (made by the hook, so that nix-collect-garbage cannot take a path
 * before it is uploaded): let go once a path is uploaded.
 */
export class LocalRoots {
  constructor(
    private readonly dir: string,
    private readonly storeDir: string,
    private readonly paths: Paths,
    private readonly log: Logger,
  ) {}

  /** Lets go of the roots of uploaded paths, except those a hook has queued again meanwhile. */
  release(uploaded: readonly string[]): void {
    const requeued = this.paths.inboxPaths();
    removeGcRoots(
      this.dir,
      uploaded.filter((path) => !requeued.has(path)),
    );
  }

  /** Removes the roots of uploaded paths (also the ones a hook made after the upload finished). */
  sweep(): void {
    try {
      const rooted = listGcRoots(this.dir, this.storeDir);
      if (rooted.length === 0) return;
      const states = this.paths.statesOf(rooted);
      this.release(rooted.filter((path) => states.get(path) === 'done'));
    } catch (err) {
      this.log.error({ err, dir: this.dir }, 'cannot sweep GC roots');
    }
  }
}
