import type { DaemonStatus } from '../queue/daemon-record.js';

const RATE_WINDOW_MS = 60_000;

/** What takes each batch's upload time: the metrics' histogram, when metrics are served. */
export interface UploadTimes {
  observe(seconds: number): void;
}

/** What the daemon counts since it started (the rates over the last minute), as its status reports it. */
export type Counts = Pick<
  DaemonStatus,
  | 'uploadedPaths'
  | 'uploadedNarBytes'
  | 'uploadedFileBytes'
  | 'failedAttempts'
  | 'retries'
  | 'pathsPerSecond'
  | 'narBytesPerSecond'
>;

/** The daemon's counters and its upload rate over the last minute. */
export class Counters {
  /** failed upload attempts of root paths, by error code */
  readonly failuresByCode = new Map<string, number>();
  /** times the uploader paused for trouble of the cache or this machine, by error code */
  readonly pausesByCode = new Map<string, number>();
  private uploadedPaths = 0;
  private uploadedNarBytes = 0;
  private uploadedFileBytes = 0;
  private retries = 0;
  private readonly samples: { at: number; paths: number; bytes: number }[] = [];

  constructor(
    private readonly startedAt: number,
    private readonly uploadTimes?: UploadTimes,
  ) {}

  uploaded(batch: { paths: number; narBytes: number; fileBytes: number; seconds: number }, now: number): void {
    this.uploadedPaths += batch.paths;
    this.uploadedNarBytes += batch.narBytes;
    this.uploadedFileBytes += batch.fileBytes;
    this.uploadTimes?.observe(batch.seconds);
    this.samples.push({ at: now, paths: batch.paths, bytes: batch.narBytes });
    while ((this.samples[0]?.at ?? now) < now - RATE_WINDOW_MS) this.samples.shift();
  }

  failed(code: string): void {
    this.failuresByCode.set(code, (this.failuresByCode.get(code) ?? 0) + 1);
  }

  paused(code: string): void {
    this.pausesByCode.set(code, (this.pausesByCode.get(code) ?? 0) + 1);
  }

  retried(): void {
    this.retries += 1;
  }

  counts(now: number): Counts {
    const recent = this.samples.filter((sample) => sample.at >= now - RATE_WINDOW_MS);
    const seconds = Math.max(1, Math.min(RATE_WINDOW_MS, now - this.startedAt) / 1000);
    return {
      uploadedPaths: this.uploadedPaths,
      uploadedNarBytes: this.uploadedNarBytes,
      uploadedFileBytes: this.uploadedFileBytes,
      failedAttempts: [...this.failuresByCode.values()].reduce((sum, n) => sum + n, 0),
      retries: this.retries,
      pathsPerSecond: recent.reduce((sum, sample) => sum + sample.paths, 0) / seconds,
      narBytesPerSecond: recent.reduce((sum, sample) => sum + sample.bytes, 0) / seconds,
    };
  }
}
