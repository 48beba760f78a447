/**
 * Raw clients for the fuzz suites: gRPC over node:http2 against the grpc-js
 * port, and Connect, gRPC-Web and plain HTTP/1.1 against the web port, each
 * reading back the status the server sent (whatever framing it used), so
 * malformed input reaches the server exactly as written.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import { Code } from "@connectrpc/connect";

/** What came back: the HTTP status, and the RPC status if the server sent one. */
export interface RawAnswer {
  http: number;
  /** The gRPC/Connect code, when the answer carried one. */
  code?: number;
  message: string;
  /** No answer within the time limit. */
  timedOut?: boolean;
  /** The connection or stream failed without an answer (reset, closed). */
  transportError?: string;
}

/** A length-prefixed message (gRPC, gRPC-Web and Connect streaming): flags, 4-byte length, payload. */
export function envelope(payload: Uint8Array, flags = 0, declaredLength = payload.length): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out[0] = flags;
  out.writeUInt32BE(declaredLength >>> 0, 1);
  Buffer.from(payload).copy(out, 5);
  return out;
}

const CODE_BY_NAME = new Map<string, number>(
  Object.entries(Code)
    .filter(([, v]) => typeof v === "number")
    .map(([name, v]) => [name.replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase()), v as number]),
);

/** A Connect error body's code ("invalid_argument") as a number. */
export function connectCode(name: unknown): number | undefined {
  return typeof name === "string" ? CODE_BY_NAME.get(name) : undefined;
}

/** A gRPC session to `port` that is replaced when it closes. */
export class H2Client {
  private session: http2.ClientHttp2Session | undefined;

  constructor(private readonly port: number) {}

  private current(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      this.session = http2.connect(`http://127.0.0.1:${this.port}`);
      this.session.on("error", () => {}); // reported per stream
    }
    return this.session;
  }

  /** POSTs `body` to `path` with gRPC headers (overridable) and reads the status from headers or trailers. */
  call(path: string, body: Buffer, headers: Record<string, string> = {}, timeoutMs = 5_000): Promise<RawAnswer> {
    const stream = this.current().request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    return new Promise((resolve) => {
      let answer: RawAnswer = { http: 0, message: "" };
      const status = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) {
          answer.code = Number(h["grpc-status"]);
          answer.message = safeDecode(String(h["grpc-message"] ?? ""));
        }
      };
      const done = (extra: Partial<RawAnswer> = {}) => {
        clearTimeout(timer);
        stream.removeAllListeners();
        stream.on("error", () => {});
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve({ ...answer, ...extra });
      };
      const timer = setTimeout(() => done({ timedOut: true }), timeoutMs);
      stream.on("response", (h) => {
        answer = { ...answer, http: Number(h[":status"]) };
        status(h);
      });
      stream.on("trailers", status);
      // A message arrived: the call was accepted (a watch would now stay open).
      stream.on("data", () => answer.code === undefined && done({ code: 0 }));
      stream.on("end", () => done());
      stream.on("error", (err) => done({ transportError: String(err) }));
      stream.on("close", () => done(answer.http === 0 ? { transportError: `stream closed (${stream.rstCode})` } : {}));
      stream.end(body);
    });
  }

  close(): void {
    this.session?.destroy();
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export interface WebResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** A streamed answer's first message arrived (and the request was then closed). */
  firstMessage?: boolean;
  timedOut?: boolean;
  transportError?: string;
}

/** An HTTP/1.1 request on a fresh connection, its body sent with a Content-Length. */
export function http1(
  port: number,
  path: string,
  body: Buffer | string,
  headers: Record<string, string>,
  method = "POST",
  timeoutMs = 5_000,
): Promise<WebResponse> {
  return new Promise((resolve) => {
    const req = http.request({ host: "127.0.0.1", port, path, method, headers, agent: false });
    const timer = setTimeout(() => {
      req.destroy();
      resolve({ status: 0, headers: {}, body: Buffer.alloc(0), timedOut: true });
    }, timeoutMs);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => {
        chunks.push(c);
        // A streamed answer (a watch) stays open: its first message means the call was accepted.
        const type = String(res.headers["content-type"] ?? "");
        const body = Buffer.concat(chunks);
        if (/^application\/(grpc-web|connect\+)/.test(type) && body.length >= 5 && body[0] === 0 && body.length >= 5 + body.readUInt32BE(1)) {
          clearTimeout(timer);
          req.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, firstMessage: true });
        }
      });
      res.on("end", () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on("error", (err) => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), transportError: String(err) });
      });
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      resolve({ status: 0, headers: {}, body: Buffer.alloc(0), transportError: String(err) });
    });
    req.end(method === "GET" ? undefined : body);
  });
}

/** Reads the status of a web-port answer in whichever protocol its content type names. */
export function webAnswer(res: WebResponse): RawAnswer {
  const base: RawAnswer = { http: res.status, message: "" };
  if (res.timedOut) return { ...base, timedOut: true };
  if (res.firstMessage) return { ...base, code: 0 };
  if (res.transportError && res.status === 0) return { ...base, transportError: res.transportError };
  const type = String(res.headers["content-type"] ?? "");
  if (res.headers["grpc-status"] !== undefined) {
    return { ...base, code: Number(res.headers["grpc-status"]), message: safeDecode(String(res.headers["grpc-message"] ?? "")) };
  }
  if (type.startsWith("application/grpc-web")) {
    // The status is in the trailer frame (flag 0x80): "grpc-status: 3\r\ngrpc-message: …".
    for (let at = 0; at + 5 <= res.body.length; ) {
      const flags = res.body[at]!;
      const len = res.body.readUInt32BE(at + 1);
      const payload = res.body.subarray(at + 5, at + 5 + len);
      if (flags & 0x80) {
        const text = payload.toString("utf8");
        const code = /grpc-status:\s*(\d+)/i.exec(text)?.[1];
        const msg = /grpc-message:\s*([^\r\n]*)/i.exec(text)?.[1] ?? "";
        return { ...base, ...(code !== undefined ? { code: Number(code) } : {}), message: safeDecode(msg) };
      }
      at += 5 + len;
    }
    return base;
  }
  if (type.startsWith("application/connect+")) {
    // The last envelope (flag 0x02) ends the stream: {"error": {"code": …}} or {}.
    for (let at = 0; at + 5 <= res.body.length; ) {
      const flags = res.body[at]!;
      const len = res.body.readUInt32BE(at + 1);
      if (flags & 0x02) {
        const end = parseJson(res.body.subarray(at + 5, at + 5 + len));
        const error = (end as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
        return { ...base, code: error ? (connectCode(error.code) ?? Code.Unknown) : 0, message: String(error?.message ?? "") };
      }
      at += 5 + len;
    }
    return base;
  }
  if (type.startsWith("application/json") && res.status !== 200) {
    const err = parseJson(res.body) as { code?: unknown; message?: unknown } | undefined;
    return { ...base, code: connectCode(err?.code) ?? Code.Unknown, message: String(err?.message ?? "") };
  }
  return { ...base, ...(res.status === 200 ? { code: 0 } : {}) };
}

function parseJson(b: Buffer): unknown {
  try {
    return JSON.parse(b.toString("utf8"));
  } catch {
    return undefined;
  }
}
