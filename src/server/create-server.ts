/**
 * The broker's listeners: gRPC (HTTP/2) on grpc-js, and Connect + gRPC-Web
 * over HTTP/1.1 on connect-node for browsers, with CORS. Both serve the same
 * intercepted ServiceImpl. Cleartext by default; with `tls` (AUTH_MODE=mtls)
 * both speak TLS, drop at the TLS layer a client without a verified
 * certificate from the client CA, and pass the peer to the authenticator
 * (through peerKey; the gRPC side in grpc-adapter.ts). Both refuse a
 * request carrying a field the broker does not know (unknown-fields.ts).
 */
import { setMaxListeners } from "node:events";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { TLSSocket } from "node:tls";
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type ServiceImpl,
  cors as connectCors,
  createContextValues,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import { addConnectService } from "./grpc-adapter.js";
import { DEV_DID_HEADER, peerKey } from "./principal.js";
import { refuseUnknownFields, strictJsonOptions } from "./unknown-fields.js";

/** PEM text of the server's certificate chain and key, and of the CA that issues client certificates. */
export interface TlsOptions {
  cert: string;
  key: string;
  clientCa: string;
}

export interface ServerOptions {
  host: string;
  grpcPort: number;
  webPort: number;
  corsOrigins: string[];
  /**
   * Extra routes on the web port, by exact path (without the query string):
   * JSON health documents, metrics, the dashboard. Anything else goes to Connect.
   */
  routes?: Record<string, WebRoute>;
  /** Adds further services to the gRPC server (health, reflection) before it binds. */
  grpcServices?: (server: grpc.Server) => void;
  /** Largest request message. By default, 1 MiB. */
  maxMessageBytes?: number;
  /** HTTP/2 streams one gRPC connection may have open. By default, 100. */
  maxConcurrentStreams?: number;
  /** Serve both ports over TLS, requiring a client certificate from `clientCa`. By default, cleartext. */
  tls?: TlsOptions;
}

/**
 * A route on the web port: `json` answers GET (and HEAD, with the same
 * headers and no body) with the JSON of what it resolves to, 503 when it
 * throws; `handle` is given the request as it is.
 */
export type WebRoute = (() => Promise<unknown>) | { handle: http.RequestListener };

export interface RunningServer {
  grpcPort: number;
  webPort: number;
  /** Aborted when shutdown's grace is over: what is still running is answered UNAVAILABLE. */
  shutdownSignal: AbortSignal;
  /**
   * Stops accepting calls, lets the calls in flight finish for up to
   * `graceMs` (by default 10 s), then answers what is left UNAVAILABLE and
   * closes every connection. Resolves with what was cut short.
   */
  close(graceMs?: number): Promise<{ cutShort: number }>;
}

/** Answers CORS for configured origins only; requests from other origins get no CORS headers. */
function withCors(origins: ReadonlySet<string>, next: http.RequestListener): http.RequestListener {
  // A browser may send its own request id and trace context, and read the request id back.
  const allowHeaders = [...connectCors.allowedHeaders, "Authorization", DEV_DID_HEADER, "X-Request-Id", "traceparent", "tracestate"].join(", ");
  const exposeHeaders = [...connectCors.exposedHeaders, "X-Request-Id"].join(", ");
  const allowMethods = connectCors.allowedMethods.join(", ");
  return (req, res) => {
    const origin = req.headers.origin;
    if (origin !== undefined) {
      res.setHeader("Vary", "Origin");
      if (origins.has(origin)) {
        res.setHeader("Access-Control-Allow-Origin", origin);
        res.setHeader("Access-Control-Expose-Headers", exposeHeaders);
        if (req.method === "OPTIONS") {
          res.writeHead(204, {
            "Access-Control-Allow-Methods": allowMethods,
            "Access-Control-Allow-Headers": allowHeaders,
            "Access-Control-Max-Age": "7200",
          });
          res.end();
          return;
        }
      } else if (req.method === "OPTIONS") {
        res.writeHead(403).end();
        return;
      }
    }
    next(req, res);
  };
}

/**
 * An answer given before its request body was read (connect-node refuses a
 * chunked body past the size limit as soon as it sees it, and stops reading)
 * would leave the rest of the body in the connection, where the next request
 * would never be parsed. As HTTP/1.1 prescribes, such an answer says
 * `Connection: close`, and Node closes the connection once it is sent.
 */
function closeIfBodyUnread(req: http.IncomingMessage, res: http.ServerResponse): void {
  const writeHead = res.writeHead;
  res.writeHead = function (this: http.ServerResponse, ...args: Parameters<typeof writeHead>) {
    if (!req.complete) this.setHeader("connection", "close");
    return writeHead.apply(this, args);
  } as typeof writeHead;
}

/** The verified TLS peer of a Connect request, for the authentication interceptor. */
function peerOf(req: { socket: unknown }): ContextValues {
  const values = createContextValues();
  if (req.socket instanceof TLSSocket) {
    const cert = req.socket.getPeerCertificate();
    // getPeerCertificate() answers {} when the client sent none.
    values.set(peerKey, { certificate: cert.raw ? cert : undefined, authorized: req.socket.authorized });
  }
  return values;
}

type AnyMethodImpl = (req: never, ctx: never) => unknown;

const SHUTDOWN = new ConnectError("the server is shutting down", Code.Unavailable);

/**
 * A Connect unary handler that answers UNAVAILABLE as soon as `shutdown`
 * aborts (shutdown's grace is over), whatever its handler still waits for.
 * connect-node aborts every handler's signal then; the listener is removed
 * when the call ends, so nothing is kept per call.
 */
function cutShortOnShutdown(fn: AnyMethodImpl, shutdown: AbortSignal): AnyMethodImpl {
  return (req, ctx) => {
    const signal = (ctx as { signal: AbortSignal }).signal;
    if (shutdown.aborted) return Promise.reject(SHUTDOWN);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (shutdown.aborted) reject(SHUTDOWN);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      Promise.resolve()
        .then(() => fn(req, ctx))
        .then(
          (res) => {
            signal.removeEventListener("abort", onAbort);
            resolve(res);
          },
          (err: unknown) => {
            signal.removeEventListener("abort", onAbort);
            reject(err);
          },
        );
    });
  };
}

/** The implementation of `method`; UNIMPLEMENTED when `impl` lacks it, as Connect's router.service() answers. */
function methodImpl(impl: ServiceImpl<typeof DelegationService>, method: DescMethod): AnyMethodImpl {
  const fn = (impl as unknown as Record<string, AnyMethodImpl | undefined>)[method.localName];
  if (fn) return fn.bind(impl);
  return () => {
    throw new ConnectError(`${method.parent.typeName}.${method.name} is not implemented`, Code.Unimplemented);
  };
}

/** Starts both listeners; port 0 picks a free port (reported in the result). */
export async function startServer(impl: ServiceImpl<typeof DelegationService>, options: ServerOptions): Promise<RunningServer> {
  const shutdown = new AbortController();
  // Every call in flight on the web port links its signal to this one (connect-node): no listener cap.
  setMaxListeners(0, shutdown.signal);
  const maxBytes = options.maxMessageBytes ?? 1024 * 1024;

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": maxBytes,
    "grpc.max_concurrent_streams": options.maxConcurrentStreams ?? 100,
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.keepalive_permit_without_calls": 1,
  });
  const grpcInFlight = addConnectService(grpcServer, DelegationService, impl, shutdown.signal);
  options.grpcServices?.(grpcServer);
  const tls = options.tls;
  const credentials = tls
    ? grpc.ServerCredentials.createSsl(
        Buffer.from(tls.clientCa),
        [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }],
        true, // checkClientCertificate: no verified client certificate, no connection
      )
    : grpc.ServerCredentials.createInsecure();
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(`${options.host}:${options.grpcPort}`, credentials, (err, port) => (err ? reject(err) : resolve(port))),
  );

  const connect = connectNodeAdapter({
    // One route per method, each parsing its request's JSON strictly and naming an unknown field.
    routes: (router) => {
      for (const method of DelegationService.methods) {
        // (MethodImpl of a method not known statically is `never`.)
        const fn = methodImpl(impl, method);
        router.rpc(method, (method.methodKind === "unary" ? cutShortOnShutdown(fn, shutdown.signal) : fn) as never, {
          jsonOptions: strictJsonOptions(method.input),
        });
      }
    },
    // Unknown fields are refused, never ignored (Connect ignores unknown JSON keys by default):
    // binary ones by the interceptor, JSON ones by the parser (see unknown-fields.ts).
    interceptors: [refuseUnknownFields],
    jsonOptions: { ignoreUnknownFields: false },
    readMaxBytes: maxBytes,
    shutdownSignal: shutdown.signal,
    ...(tls ? { contextValues: peerOf } : {}),
  });
  const routes = new Map(Object.entries(options.routes ?? {}));
  let webInFlight = 0;
  let closing = false;
  const webDone = () => {
    webInFlight--;
    // Draining: a keep-alive connection whose last call just finished is closed now, not at its timeout.
    if (closing) setImmediate(() => web.closeIdleConnections());
  };
  const listener = withCors(new Set(options.corsOrigins), (req, res) => {
    webInFlight++;
    res.once("close", webDone);
    // (A Content-Length body past the limit is refused before any of it is read, and Node discards it.)
    if (req.headers["transfer-encoding"] !== undefined) closeIfBodyUnread(req, res);
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const route = routes.get(q === -1 ? url : url.slice(0, q));
    if (!route) return connect(req, res);
    if (typeof route !== "function") return route.handle(req, res);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const head = req.method === "HEAD";
    route().then(
      (body) => {
        const text = JSON.stringify(body);
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(head ? undefined : text);
      },
      () => res.writeHead(503, { "content-type": "application/json" }).end(head ? undefined : '{"status":"unavailable"}'),
    );
  });
  const web = tls
    ? https.createServer(
        { cert: tls.cert, key: tls.key, ca: tls.clientCa, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.2" },
        listener,
      )
    : http.createServer(listener);
  web.keepAliveTimeout = 65_000;
  try {
    await new Promise<void>((resolve, reject) => {
      web.once("error", reject);
      web.listen(options.webPort, options.host, () => resolve());
    });
  } catch (err) {
    grpcServer.forceShutdown();
    throw err;
  }
  const webPort = (web.address() as AddressInfo).port;

  return {
    grpcPort,
    webPort,
    shutdownSignal: shutdown.signal,
    async close(graceMs = 10_000) {
      // Stop accepting: no new connections; grpc-js sends GOAWAY, idle HTTP/1.1 connections close.
      closing = true;
      const grpcDone = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
      const webDone = new Promise<void>((resolve) => web.close(() => resolve()));
      web.closeIdleConnections();
      const drained = Promise.all([grpcDone, webDone]).then(() => true);
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)));
      const inTime = await Promise.race([drained, graceOver]);
      clearTimeout(timer);
      if (inTime) return { cutShort: 0 };
      // What is still running is answered UNAVAILABLE (never a broken connection), then the connections go.
      const cutShort = grpcInFlight() + webInFlight;
      shutdown.abort();
      await Promise.race([drained, new Promise((resolve) => setTimeout(resolve, 500))]);
      grpcServer.forceShutdown();
      web.closeAllConnections();
      await drained;
      return { cutShort };
    },
  };
}
