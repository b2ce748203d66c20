import { createRequire } from 'node:module';
import { constants } from 'node:os';

/**
 * sd_notify, sent by the main process itself: systemd credits a message to a unit by the sender's pid, so
 * messages from our own pid need no `NotifyAccess=all`, and one sent just before we exit is still placed (PID 1
 * reads notifications before it handles the exit). Node has no Unix datagram sockets; the unix-dgram addon
 * sends them. A send is synchronous: when `notify` returns, the message is in systemd's queue.
 */
export interface Notifier {
  /** e.g. `{ READY: '1' }`, `{ STATUS: 'idle' }` */
  notify(fields: Record<string, string>): void;
  close(): void;
}

const require = createRequire(import.meta.url);

/** A notifier for `NOTIFY_SOCKET`, or undefined when not run by a service manager. */
export function systemdNotifier(
  env: Readonly<Record<string, string | undefined>>,
  onError: (err: Error) => void,
): Notifier | undefined {
  const path = env['NOTIFY_SOCKET'];
  if (path === undefined || path === '') return undefined;
  if (!path.startsWith('/')) {
    onError(new Error(`NOTIFY_SOCKET=${path} is not a socket path (abstract sockets are not supported): no sd_notify`));
    return undefined;
  }
  // Loaded here, not at import: only the daemon under a service manager needs the addon.
  const { createSocket } = require('unix-dgram') as typeof import('unix-dgram');
  const socket = createSocket('unix_dgram');
  return {
    notify(fields) {
      const message = Object.entries(fields)
        .map(([key, value]) => `${key}=${value.replace(/\n/g, ' ')}`)
        .join('\n');
      const data = Buffer.from(message);
      socket.send(data, 0, data.length, path, (err) => {
        if (err === undefined) return;
        const errno = Object.entries(constants.errno).find(([, number]) => -number === err.errno)?.[0];
        onError(new Error(`cannot notify systemd through ${path}: ${errno ?? err.message}`));
      });
    },
    close: () => {
      socket.close();
    },
  };
}

/** The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process), in ms; pinged at half of it. */
export function watchdogIntervalMs(env: Readonly<Record<string, string | undefined>>, pid: number): number | undefined {
  const usec = Number(env['WATCHDOG_USEC']);
  const forPid = env['WATCHDOG_PID'];
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  if (forPid !== undefined && forPid !== '' && Number(forPid) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 1000 / 2));
}
