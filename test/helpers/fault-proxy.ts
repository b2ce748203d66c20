import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * What the proxy does to a request it picks:
 * - `error500`: answers 500 InternalError (the request never reaches the server)
 * - `slowDown`: answers 503 SlowDown with `Retry-After`
 * - `reset`: closes the connection as the request arrives
 * - `stall`: takes the request and never answers, until the client gives up
 * - `truncate`: passes the request on (so the server may have done it), then sends the response's head and
 *   half its body and closes the connection: a response lost on the way back
 */
export const FAULTS = ['error500', 'slowDown', 'reset', 'stall', 'truncate'] as const;
export type Fault = (typeof FAULTS)[number];

export interface FaultProxy {
  port: number;
  endpoint: string;
  /** the share of requests (0..1) that get a fault; may be changed while it runs */
  rate: number;
  /** the faults picked from, uniformly; may be changed while it runs */
  faults: readonly Fault[];
  /** requests seen, by method, and faults injected, by kind */
  /** `stateWrites`: PUTs of cachectl's own state (leases, GC marks), which grow with batches rather than paths */
  readonly stats: {
    requests: number;
    byMethod: Record<string, number>;
    stateWrites: number;
    injected: Record<Fault, number>;
  };
  stop(): Promise<void>;
}

/** A small, seedable random source (mulberry32), so a failing run can be replayed with its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function s3Error(res: ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
  const body =
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by the fault ` +
    `proxy</Message></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/**
 * An HTTP proxy in front of an S3 server (`upstreamPort` on 127.0.0.1) that injects faults into a share of the
 * requests. Headers pass unchanged, so SigV4 signatures made for the proxy's address still hold.
 */
export async function startFaultProxy(
  upstreamPort: number,
  options: { rate: number; faults?: readonly Fault[]; seed: number; retryAfterSeconds?: number },
): Promise<FaultProxy> {
  const random = seededRandom(options.seed);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const stats = {
    requests: 0,
    byMethod: {} as Record<string, number>,
    stateWrites: 0,
    injected: Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<Fault, number>,
  };

  const forward = (req: IncomingMessage, res: ServerResponse, truncate: boolean): void => {
    const upstream = request(
      { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent },
      (upstreamRes) => {
        if (!truncate) {
          res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
          upstreamRes.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        upstreamRes.on('data', (chunk: Buffer) => chunks.push(chunk));
        upstreamRes.on('end', () => {
          const body = Buffer.concat(chunks);
          // The head promises more than arrives: the client sees the connection close mid-body.
          res.writeHead(upstreamRes.statusCode ?? 502, {
            ...upstreamRes.headers,
            'content-length': String(Math.max(body.length, 32)),
          });
          res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.socket?.destroy());
        });
      },
    );
    upstream.on('error', () => res.socket?.destroy());
    req.pipe(upstream);
  };

  const server = createServer((req, res) => {
    stats.requests += 1;
    const method = req.method ?? '?';
    stats.byMethod[method] = (stats.byMethod[method] ?? 0) + 1;
    if (method === 'PUT' && (req.url ?? '').includes('/cachectl/')) stats.stateWrites += 1;
    const fault =
      random() < proxy.rate && proxy.faults.length > 0
        ? proxy.faults[Math.floor(random() * proxy.faults.length)]
        : undefined;
    if (fault !== undefined) stats.injected[fault] += 1;
    switch (fault) {
      case undefined: {
        forward(req, res, false);
        return;
      }
      case 'truncate': {
        forward(req, res, true);
        return;
      }
      case 'reset':
        req.socket.destroy();
        return;
      case 'stall':
        req.resume(); // read what comes, answer nothing
        return;
      case 'error500':
        req.resume();
        req.on('end', () => {
          s3Error(res, 500, 'InternalError');
        });
        return;
      case 'slowDown':
        req.resume();
        req.on('end', () => {
          s3Error(res, 503, 'SlowDown', { 'retry-after': String(options.retryAfterSeconds ?? 1) });
        });
        return;
    }
  });
  const { port, stop } = await listenLocally(server, agent);
  const proxy: FaultProxy = {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    rate: options.rate,
    faults: options.faults ?? FAULTS,
    stats,
    stop,
  };
  return proxy;
}

/**
 * Listens on a free port of 127.0.0.1. `stop` closes every connection (a client's kept-alive ones included)
 * and the upstream `agent`, then the server.
 */
export async function listenLocally(
  server: Server,
  agent: Agent,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      agent.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}
