/**
 * A promise that rejects with `signal`'s reason once it aborts (at once if it has), for racing against work;
 * `dispose` removes its listener, so a signal that lives as long as the process does not gather one per race.
 */
export function whenAborted(signal: AbortSignal): { aborted: Promise<never>; dispose: () => void } {
  let dispose: () => void = () => undefined;
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = () => {
      const reason: unknown = signal.reason;
      reject(reason instanceof Error ? reason : new Error(String(reason)));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    dispose = () => {
      signal.removeEventListener('abort', onAbort);
    };
  });
  // Only ever raced against: an abort no race was waiting for is no unhandled rejection.
  aborted.catch(() => undefined);
  return { aborted, dispose };
}
