// The part of unix-dgram's API that cachectl and its tests use (the package ships no types).
declare module 'unix-dgram' {
  import type { EventEmitter } from 'node:events';

  interface UnixDatagramSocket extends EventEmitter {
    bind(path: string): void;
    send(
      buf: Buffer,
      offset: number,
      length: number,
      path: string,
      callback: (err?: Error & { errno?: number }) => void,
    ): void;
    close(): void;
    on(event: 'message', listener: (data: Buffer) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
  }

  export function createSocket(type: 'unix_dgram'): UnixDatagramSocket;
}
