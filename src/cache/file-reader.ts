/**
 * Reads batches of small files in worker threads, for a file:// cache's `getMany`: a cold GC reads a million
 * narinfos, and on the main thread each read's open, read and close came one after another with its parsing.
 * This module is both sides: imported, it is the pool; run as a worker, it reads.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';

interface Request {
  id: number;
  paths: readonly string[];
}

/** The files' contents end to end in `bytes`; file i is bytes[ends[i-1]..ends[i]), or missing where ends[i] is -1. */
interface Answer {
  id: number;
  bytes?: Uint8Array;
  ends?: Int32Array;
  failure?: { index: number; message: string };
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  port.on('message', ({ id, paths }: Request) => {
    const bodies: Buffer[] = [];
    const ends = new Int32Array(paths.length);
    let length = 0;
    for (const [index, path] of paths.entries()) {
      try {
        const body = readFileSync(path);
        bodies.push(body);
        length += body.length;
        ends[index] = length;
      } catch (err) {
        const { code, message } = err as NodeJS.ErrnoException;
        if (code !== 'ENOENT') {
          port.postMessage({ id, failure: { index, message } } satisfies Answer);
          return;
        }
        ends[index] = -1;
      }
    }
    // One buffer of its own for the batch, moved rather than copied (readFileSync's small buffers share a pool,
    // which must not be moved away).
    const bytes = Buffer.allocUnsafeSlow(length);
    let offset = 0;
    for (const body of bodies) offset += body.copy(bytes, offset);
    port.postMessage({ id, bytes, ends } satisfies Answer, [bytes.buffer, ends.buffer]);
  });
}

/** Read failures other than a missing file, with the index of the path that failed. */
export class FileReadError extends Error {
  constructor(
    readonly index: number,
    message: string,
  ) {
    super(message);
  }
}

/** Worker threads that read files, started at the first batch and stopped by `close`. */
export class FileReaderPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (answer: Answer) => void; reject: (err: Error) => void }>();
  private nextId = 0;
  private nextWorker = 0;
  /** a reader per core, up to 4 */
  private readonly size = Math.min(4, availableParallelism());

  /** The contents of `paths`, in order; undefined for a missing file. */
  async read(paths: readonly string[]): Promise<(Buffer | undefined)[]> {
    const id = (this.nextId += 1);
    const answer = await new Promise<Answer>((resolve, reject) => {
      const worker = this.worker();
      // Referenced while a batch is out, so that the process waits for it; idle readers let it exit.
      if (this.pending.size === 0) for (const each of this.workers) each.ref();
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, paths } satisfies Request);
    });
    if (answer.failure !== undefined) {
      const { index, message } = answer.failure;
      throw new FileReadError(index, message);
    }
    const moved = answer.bytes as Uint8Array;
    const bytes = Buffer.from(moved.buffer, moved.byteOffset, moved.byteLength);
    const ends = answer.ends as Int32Array;
    let start = 0;
    return paths.map((_, index) => {
      const end = ends[index] as number;
      if (end < 0) return undefined;
      const body = bytes.subarray(start, end);
      start = end;
      return body;
    });
  }

  close(): void {
    for (const worker of this.workers) void worker.terminate();
    this.workers.length = 0;
  }

  private worker(): Worker {
    if (this.workers.length < this.size) {
      const worker = new Worker(new URL(import.meta.url));
      worker.on('message', (answer: Answer) => {
        this.pending.get(answer.id)?.resolve(answer);
        this.pending.delete(answer.id);
        if (this.pending.size === 0) for (const each of this.workers) each.unref();
      });
      worker.on('error', (err) => {
        // A worker that dies fails every batch: they are few, and a GC that cannot read stops anyway.
        for (const { reject } of this.pending.values()) reject(err);
        this.pending.clear();
        this.workers.splice(this.workers.indexOf(worker), 1);
      });
      this.workers.push(worker);
      return worker;
    }
    this.nextWorker = (this.nextWorker + 1) % this.workers.length;
    return this.workers[this.nextWorker] as Worker;
  }
}
