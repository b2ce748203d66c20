import { CachectlError } from './errors.js';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * Parses a duration the way Go and niks3 write them, e.g. `720h`, `30m`, `1h30m`, `0s`, `2.5h`; `d` (24 h)
 * is allowed too. `what` names the option in the error.
 */
export function parseDuration(text: string, what: string): number {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (text === '' || parts.map((part) => part[0]).join('') !== text) {
    throw new CachectlError(
      'CONFIG_INVALID',
      `${what} ${JSON.stringify(text)} is not a duration; write it like 720h, 30m, 1h30m or 0s`,
    );
  }
  return Math.round(parts.reduce((sum, part) => sum + Number(part[1]) * UNIT_MS[part[2] as keyof typeof UNIT_MS], 0));
}

/** A duration in the largest units that keep it readable: `3d4h`, `25m`, `0s`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return ms === 0 ? '0s' : `${ms}ms`;
  let rest = Math.round(ms / 1000);
  const text: string[] = [];
  for (const [unit, seconds] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (rest >= seconds) {
      text.push(`${Math.floor(rest / seconds)}${unit}`);
      rest %= seconds;
    }
  }
  return text.join('');
}
