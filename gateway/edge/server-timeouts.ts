import { createServer, type RequestListener, type Server } from 'node:http';

// The gateway's HTTP server timeouts. Node's defaults let a client that trickles its headers or
// body hold a socket for 5 minutes (requestTimeout 300 s) and close idle keep-alive sockets after
// 5 s. Live `_changes` feeds are not at odds with these: requestTimeout and headersTimeout only
// bound how long the *request* takes to arrive, and a longpoll's request is a GET with no body;
// the answer may then be held up to 60 s (the feed's own cap, gateway/sync/policy.ts), which no
// timeout here touches.

export interface ServerTimeouts {
  /** Time a client has to send all request headers (slowloris). */
  headersTimeoutMs: number;
  /** Time a client has to send the whole request, body included (a 16 MB push on a slow link fits). */
  requestTimeoutMs: number;
  /** How long an idle keep-alive socket is kept; above the 60 s of common proxies and load balancers, so they close first. */
  keepAliveTimeoutMs: number;
  /** How often Node checks the two request timeouts (they are only as precise as this). */
  checkIntervalMs: number;
}

export const DEFAULT_SERVER_TIMEOUTS: ServerTimeouts = {
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 120_000,
  keepAliveTimeoutMs: 65_000,
  checkIntervalMs: 5_000,
};

/** An http.Server for the gateway app with the timeouts above (or the given ones). */
export function createGatewayServer(app: RequestListener, timeouts: Partial<ServerTimeouts> = {}): Server {
  const t = { ...DEFAULT_SERVER_TIMEOUTS, ...timeouts };
  const server = createServer(
    {
      // Node refuses a headersTimeout above requestTimeout.
      headersTimeout: Math.min(t.headersTimeoutMs, t.requestTimeoutMs),
      requestTimeout: t.requestTimeoutMs,
      connectionsCheckingInterval: t.checkIntervalMs,
    },
    app,
  );
  server.keepAliveTimeout = t.keepAliveTimeoutMs;
  return server;
}
