import type { PushProgress } from '../upload/push.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(1)} ${UNITS[unit]}`;
}

/** One status line, redrawn in place on a terminal: paths, bytes and rate. */
export function progressLine(progress: PushProgress, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (progress.narBytesDone / elapsedMs) * 1000 : 0;
  return (
    `paths ${progress.pathsDone}/${progress.pathsTotal}  ` +
    `${formatBytes(progress.narBytesDone)}/${formatBytes(progress.narBytesTotal)}  ${formatBytes(rate)}/s`
  );
}

/** Redraws the progress line on `stream` every `intervalMs` until stopped. */
export function showProgress(stream: NodeJS.WriteStream, progress: PushProgress, intervalMs = 200): { stop(): void } {
  const started = Date.now();
  const draw = () => stream.write(`\r\x1b[K${progressLine(progress, Date.now() - started)}`);
  const timer = setInterval(draw, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      draw();
      stream.write('\n');
    },
  };
}
