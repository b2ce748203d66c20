import type Database from 'better-sqlite3';

/** What `status` and the metrics show of a `cachectl gc` run. */
export interface GcRun {
  cache: string;
  finishedAt: number;
  seconds: number;
  dryRun: boolean;
  /** finished its work: no error, and the sweep was not stopped early */
  ok: boolean;
  deletedObjects: number;
  deletedBytes: number;
  /** why it failed or stopped early */
  problem?: string;
}

const GC_RUNS_KEPT = 30;

/** The summaries of the last runs of `cachectl gc` on this machine, in the queue database. */
export class GcRuns {
  private readonly insert: Database.Statement<[number, string]>;
  private readonly prune: Database.Statement<[number]>;
  private readonly latest: Database.Statement<[], { summary: string }>;

  constructor(private readonly db: Database.Database) {
    this.insert = db.prepare('INSERT INTO gc_runs (finished_at, summary) VALUES (?, ?)');
    this.prune = db.prepare('DELETE FROM gc_runs WHERE id <= (SELECT max(id) FROM gc_runs) - ?');
    this.latest = db.prepare('SELECT summary FROM gc_runs ORDER BY id DESC LIMIT 1');
  }

  /** Keeps the summary of a run (the last few are kept). */
  record(run: GcRun): void {
    this.db
      .transaction(() => {
        this.insert.run(run.finishedAt, JSON.stringify(run));
        this.prune.run(GC_RUNS_KEPT);
      })
      .immediate();
  }

  last(): GcRun | undefined {
    const row = this.latest.get();
    return row === undefined ? undefined : (JSON.parse(row.summary) as GcRun);
  }
}
