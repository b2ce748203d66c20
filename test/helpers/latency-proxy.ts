import { Agent, createServer, request } from 'node:http';
import { listenLocally } from './fault-proxy.js';

export interface LatencyProxy {
  port: number;
  endpoint: string;
  /** the time each request waits before it is passed on: a round trip to a server far away; may be changed */
  delayMs: number;
  /** requests seen, by method */
  readonly stats: { requests: number; byMethod: Record<string, number> };
  stop(): Promise<void>;
}

/**
 * An HTTP proxy in front of a server on 127.0.0.1 (`upstreamPort`) that holds each request `delayMs` before
 * passing it on, as a server that far away would answer no sooner. Requests are not queued behind each other:
 * a client with many connections waits one delay for all of them, as over a real link. Headers pass
 * unchanged, so SigV4 signatures made for the proxy's address still hold.
 */
export async function startLatencyProxy(upstreamPort: number, options: { delayMs: number }): Promise<LatencyProxy> {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const stats = { requests: 0, byMethod: {} as Record<string, number> };
  const server = createServer((req, res) => {
    stats.requests += 1;
    const method = req.method ?? '?';
    stats.byMethod[method] = (stats.byMethod[method] ?? 0) + 1;
    // The body waits in the socket meanwhile (nothing reads it), as it would on the wire.
    setTimeout(() => {
      const upstream = request(
        { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent },
        (upstreamRes) => {
          res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
          upstreamRes.pipe(res);
        },
      );
      upstream.on('error', () => res.socket?.destroy());
      req.pipe(upstream);
    }, proxy.delayMs);
  });
  const { port, stop } = await listenLocally(server, agent);
  const proxy: LatencyProxy = { port, endpoint: `http://127.0.0.1:${port}`, delayMs: options.delayMs, stats, stop };
  return proxy;
}
