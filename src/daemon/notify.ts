import { execFile } from 'node:child_process';

/**
 * sd_notify for a service manager. Node cannot send on a Unix datagram socket, so each message goes out
 * through the `systemd-notify` program; it sends from its own PID, which is why the unit needs
 * `NotifyAccess=all`, and `--pid` names us as the main process. Messages are sent one after another, in order.
 */
export interface Notifier {
  /** e.g. `{ READY: '1' }`, `{ STATUS: 'idle' }` */
  notify(fields: Record<string, string>): Promise<void>;
}

export function systemdNotifier(
  env: Readonly<Record<string, string | undefined>>,
  onError: (err: Error) => void,
  program = 'systemd-notify',
): Notifier | undefined {
  if (env['NOTIFY_SOCKET'] === undefined || env['NOTIFY_SOCKET'] === '') return undefined;
  let last = Promise.resolve();
  return {
    notify(fields) {
      const args = [`--pid=${process.pid}`, ...Object.entries(fields).map(([key, value]) => `${key}=${value.replace(/\n/g, ' ')}`)];
      last = last.then(
        () =>
          new Promise<void>((resolve) => {
            execFile(program, args, (err) => {
              if (err !== null) onError(err);
              resolve();
            });
          }),
      );
      return last;
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
