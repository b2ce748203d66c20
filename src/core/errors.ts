/**
 * The one error class of cachectl. `code` is stable (docs/errors.md lists every code), `retryable` says whether
 * trying the same thing again later can succeed, and the message names the thing and the fix.
 */
export const ERROR_CODES = [
  'CONFIG_INVALID',
  'CACHE_URL_INVALID',
  'STORE_PATH_INVALID',
  'PATH_NOT_IN_STORE',
  'PATH_NOT_VALID',
  'NIX_STORE_UNREADABLE',
  'SECRET_KEY_INVALID',
  'SECRET_KEY_UNREADABLE',
  'SECRET_KEY_PERMISSIONS',
  'PUBLIC_KEY_INVALID',
  'SIGNER_FAILED',
  'NARINFO_INVALID',
  'REALISATION_INVALID',
  'NAR_HASH_MISMATCH',
  'NAR_UNREADABLE',
  'NAR_CORRUPT',
  'BUILD_LOG_UNREADABLE',
  'CACHE_UNREACHABLE',
  'CACHE_NOT_FOUND',
  'CACHE_ACCESS_DENIED',
  'CACHE_STORE_DIR_MISMATCH',
  'CACHE_THROTTLED',
  'CACHE_WRITE_FAILED',
  'QUEUE_MISSING',
  'QUEUE_UNREADABLE',
  'DAEMON_RUNNING',
  'PATH_NOT_QUEUED',
  'PATH_NOT_IN_CACHE',
  'PIN_INVALID',
  'PIN_NOT_FOUND',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class CachectlError extends Error {
  override readonly name = 'CachectlError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  /** how long the server asked us to wait (HTTP Retry-After), when it did */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { retryable?: boolean; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** The text of any thrown value, for messages that wrap a lower-level failure. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
