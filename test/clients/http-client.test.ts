/**
 * The shared outbound HTTP policy, against a tiny real loopback server:
 * which failures are repeated for which methods, Retry-After, per-attempt and
 * whole-call deadlines, and malformed JSON.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HttpClient, type HttpClientOptions, UpstreamError, retryAfterMs } from "../../src/clients/http/http-client.js";
import { asCaller, callerCode } from "../helpers/caller-code.js";

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** A loopback server whose answers a test scripts, one handler per request in turn. */
class Loopback {
  hits: { method: string; url: string; headers: IncomingMessage["headers"]; rawHeaders: string[]; body: string }[] = [];
  script: Handler[] = [];
  fallback: Handler = (_req, res) => res.end("{}");
  private port = 0;
  private readonly server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      this.hits.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, rawHeaders: req.rawHeaders, body });
      (this.script.shift() ?? this.fallback)(req, res, body);
    });
  });

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async up(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(this.port, "127.0.0.1", () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async down(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

const status =
  (code: number, headers: Record<string, string> = {}, body = `{"status":${code}}`): Handler =>
  (_req, res) => {
    res.writeHead(code, { "content-type": "application/json", ...headers });
    res.end(body);
  };
/** Never answers (until the server goes down). */
const hang: Handler = () => {};

let server: Loopback;
let client: HttpClient | undefined;
let sleeps: number[];

/** A client with instant, recorded sleeps unless the test passes its own. */
function makeClient(options: Partial<HttpClientOptions> = {}): HttpClient {
  client = new HttpClient({
    system: "test",
    timeoutMs: 2_000,
    maxRetries: 3,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...options,
  });
  return client;
}

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

beforeEach(async () => {
  sleeps = [];
  server = new Loopback();
  await server.up();
});

afterEach(async () => {
  await client?.close();
  client = undefined;
  await server.down().catch(() => undefined);
});

describe("HttpClient retries", () => {
  it("repeats a GET after 500, 502, 503 and 504 and returns the first good answer", async () => {
    server.script = [status(500), status(502), status(503), status(504)];
    const res = await makeClient({ maxRetries: 4 }).send({ method: "GET", url: `${server.url}/x` });
    expect(res.status).toBe(200);
    expect(server.hits).toHaveLength(5);
  });

  it("gives up after maxRetries with an UpstreamError carrying the last status", async () => {
    server.fallback = status(503);
    const err = await failure(makeClient({ maxRetries: 2 }).send({ method: "GET", url: `${server.url}/x` }));
    expect(server.hits).toHaveLength(3);
    expect(err.failure).toBe("status");
    expect(err.status).toBe(503);
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.reason).toBe("TEST_UNAVAILABLE");
  });

  it("does not repeat a POST after a 500: it may have been processed", async () => {
    server.fallback = status(500);
    const err = await failure(makeClient().send({ method: "POST", url: `${server.url}/x`, json: {} }));
    expect(server.hits).toHaveLength(1);
    expect(err.status).toBe(500);
  });

  it("repeats a POST the caller marks idempotent after a 500", async () => {
    server.script = [status(500)];
    const res = await makeClient().send({ method: "POST", url: `${server.url}/x`, json: {}, idempotent: true });
    expect(res.status).toBe(200);
    expect(server.hits).toHaveLength(2);
  });

  it("repeats a POST whose connection was refused: nothing was sent", async () => {
    await server.down();
    const c = makeClient({
      sleep: async (ms) => {
        sleeps.push(ms);
        await server.up();
      },
    });
    const res = await c.send({ method: "POST", url: `${server.url}/x`, json: { a: 1 } });
    expect(res.status).toBe(200);
    expect(sleeps).toHaveLength(1);
    expect(server.hits).toHaveLength(1);
  });

  it("reports a server that stays unreachable as UNAVAILABLE after the retries", async () => {
    await server.down();
    const err = await failure(makeClient({ maxRetries: 2 }).send({ method: "POST", url: `${server.url}/x`, json: {} }));
    expect(err.failure).toBe("unreachable");
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.message).toContain("ECONNREFUSED");
    expect(sleeps).toHaveLength(2);
  });

  it("does not repeat a POST whose connection dropped after it was sent", async () => {
    server.fallback = (req) => req.socket.destroy();
    const err = await failure(makeClient().send({ method: "POST", url: `${server.url}/x`, json: {} }));
    expect(err.failure).toBe("unreachable");
    expect(server.hits).toHaveLength(1);
  });

  it("repeats a GET whose connection dropped", async () => {
    server.script = [(req) => req.socket.destroy()];
    const res = await makeClient().send({ method: "GET", url: `${server.url}/x` });
    expect(res.status).toBe(200);
    expect(server.hits).toHaveLength(2);
  });

  it("repeats a POST after 429, waiting the Retry-After seconds", async () => {
    server.script = [status(429, { "retry-after": "2" })];
    const res = await makeClient().send({ method: "POST", url: `${server.url}/x`, json: {} });
    expect(res.status).toBe(200);
    expect(server.hits).toHaveLength(2);
    expect(sleeps).toEqual([2_000]);
  });

  it("honours Retry-After given as an HTTP date", async () => {
    const at = new Date(Date.now() + 3_000).toUTCString();
    server.script = [status(429, { "retry-after": at })];
    await makeClient().send({ method: "GET", url: `${server.url}/x` });
    expect(sleeps).toHaveLength(1);
    // The date has one-second resolution.
    expect(sleeps[0]).toBeGreaterThan(1_000);
    expect(sleeps[0]).toBeLessThanOrEqual(3_000);
  });

  it("honours Retry-After on a 503 for a GET", async () => {
    server.script = [status(503, { "retry-after": "1" })];
    await makeClient().send({ method: "GET", url: `${server.url}/x` });
    expect(sleeps).toEqual([1_000]);
  });

  it("caps Retry-After at maxBackoffMs", async () => {
    server.script = [status(429, { "retry-after": "120" })];
    await makeClient({ maxBackoffMs: 750, deadlineMs: 60_000 }).send({ method: "GET", url: `${server.url}/x` });
    expect(sleeps).toEqual([750]);
  });

  it("stops rather than wait past the deadline", async () => {
    server.fallback = status(429, { "retry-after": "5" });
    const err = await failure(makeClient({ deadlineMs: 3_000, maxBackoffMs: 10_000 }).send({ method: "GET", url: `${server.url}/x` }));
    expect(err.status).toBe(429);
    expect(sleeps).toEqual([]);
    expect(server.hits).toHaveLength(1);
  });

  it("ignores a Retry-After that is neither seconds nor a date, and backs off instead", async () => {
    server.script = [status(429, { "retry-after": "1.5" })];
    await makeClient({ minBackoffMs: 100, maxBackoffMs: 5_000 }).send({ method: "GET", url: `${server.url}/x` });
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeLessThanOrEqual(100);
  });

  it("backs off with full jitter below min * 2^attempt, capped", async () => {
    server.fallback = status(503);
    await failure(makeClient({ maxRetries: 5, minBackoffMs: 100, maxBackoffMs: 500 }).send({ method: "GET", url: `${server.url}/x` }));
    expect(sleeps).toHaveLength(5);
    const bounds = [100, 200, 400, 500, 500];
    sleeps.forEach((ms, i) => {
      expect(ms).toBeGreaterThanOrEqual(0);
      expect(ms).toBeLessThanOrEqual(bounds[i]!);
    });
  });

  it("returns 4xx answers other than 429 to the caller without repeating them", async () => {
    server.fallback = status(404, {}, `{"detail":"nope"}`);
    const res = await makeClient().send({ method: "GET", url: `${server.url}/x` });
    expect(res.status).toBe(404);
    expect(res.text).toBe(`{"detail":"nope"}`);
    expect(server.hits).toHaveLength(1);
  });
});

describe("HttpClient deadlines", () => {
  it("ends an attempt that does not answer within timeoutMs with DEADLINE_EXCEEDED, and repeats a GET", async () => {
    server.script = [hang];
    const started = Date.now();
    const res = await makeClient({ timeoutMs: 150 }).send({ method: "GET", url: `${server.url}/x` });
    expect(res.status).toBe(200);
    expect(server.hits).toHaveLength(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it("does not repeat a POST that timed out: it may have been processed", async () => {
    server.fallback = hang;
    const err = await failure(makeClient({ timeoutMs: 150 }).send({ method: "POST", url: `${server.url}/x`, json: {} }));
    expect(err.failure).toBe("timeout");
    expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
    expect(err.reason).toBe("TEST_TIMEOUT");
    expect(server.hits).toHaveLength(1);
  });

  it("counts a body that stalls after the headers against the same timeout", async () => {
    server.fallback = (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(`{"partial":`);
    };
    const err = await failure(makeClient({ timeoutMs: 150, maxRetries: 0 }).send({ method: "GET", url: `${server.url}/x` }));
    expect(err.failure).toBe("timeout");
  });

  it("gives up the whole call at deadlineMs, however many retries are left", async () => {
    server.fallback = hang;
    const started = Date.now();
    const c = makeClient({ timeoutMs: 200, deadlineMs: 500, maxRetries: 50, minBackoffMs: 1, sleep: undefined });
    const err = await failure(c.send({ method: "GET", url: `${server.url}/x` }));
    const took = Date.now() - started;
    expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
    expect(took).toBeGreaterThanOrEqual(450);
    expect(took).toBeLessThan(1_500);
    expect(server.hits.length).toBeGreaterThanOrEqual(2);
    expect(server.hits.length).toBeLessThanOrEqual(4);
  });

  it("cuts short the attempt in flight when the whole call's deadline comes first", async () => {
    server.fallback = hang;
    const started = Date.now();
    const err = await failure(makeClient({ timeoutMs: 1_000, deadlineMs: 600 }).send({ method: "GET", url: `${server.url}/x` }));
    const took = Date.now() - started;
    expect(callerCode(err)).toBe("DEADLINE_EXCEEDED");
    expect(took).toBeGreaterThanOrEqual(550);
    expect(took).toBeLessThan(950);
    expect(server.hits).toHaveLength(1);
  });

  it("a per-request timeoutMs overrides the client's", async () => {
    server.fallback = hang;
    const started = Date.now();
    const err = await failure(makeClient({ timeoutMs: 5_000 }).send({ method: "POST", url: `${server.url}/x`, json: {}, timeoutMs: 100 }));
    expect(err.failure).toBe("timeout");
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});

describe("HttpClient abandoned at shutdown", () => {
  it("cancels the request in flight at once, with a retryable UNAVAILABLE, and sends no retry", async () => {
    server.fallback = hang;
    const abandon = new AbortController();
    const call = failure(makeClient({ timeoutMs: 30_000, abandon: abandon.signal }).send({ method: "GET", url: `${server.url}/x` }));
    for (let i = 0; i < 200 && server.hits.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const began = Date.now();
    abandon.abort();
    const err = await call;
    expect(Date.now() - began).toBeLessThan(500);
    expect(err.message).toBe("test call abandoned: the broker is shutting down");
    expect(err.retryable).toBe(true);
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(server.hits).toHaveLength(1);
  });

  it("ends a backoff wait (here a Retry-After of 5 s) instead of sleeping it out", async () => {
    server.fallback = status(503, { "retry-after": "5" });
    const abandon = new AbortController();
    const c = makeClient({ maxBackoffMs: 10_000, abandon: abandon.signal, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) });
    const call = failure(c.send({ method: "GET", url: `${server.url}/x` }));
    for (let i = 0; i < 200 && server.hits.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
    const began = Date.now();
    abandon.abort();
    const err = await call;
    expect(Date.now() - began).toBeLessThan(500);
    expect(err.message).toMatch(/abandoned/);
    expect(server.hits).toHaveLength(1);
  });

  it("sends nothing once abandoned", async () => {
    const abandon = new AbortController();
    abandon.abort();
    const err = await failure(makeClient({ abandon: abandon.signal }).send({ method: "POST", url: `${server.url}/x`, json: {} }));
    expect(err.message).toMatch(/abandoned/);
    expect(server.hits).toHaveLength(0);
  });
});

describe("HttpClient requests and answers", () => {
  it("sends JSON with its content type and accepts JSON", async () => {
    await makeClient().send({ method: "POST", url: `${server.url}/x`, json: { a: [1, "b"] }, headers: { "x-extra": "1" } });
    const hit = server.hits[0]!;
    expect(hit.headers["content-type"]).toBe("application/json");
    expect(hit.headers.accept).toBe("application/json");
    expect(hit.headers["x-extra"]).toBe("1");
    expect(JSON.parse(hit.body)).toEqual({ a: [1, "b"] });
  });

  it("sends a form urlencoded", async () => {
    await makeClient().send({ method: "POST", url: `${server.url}/x`, form: { grant_type: "client_credentials", scope: "a b" } });
    const hit = server.hits[0]!;
    expect(hit.headers["content-type"]).toBe("application/x-www-form-urlencoded");
    expect(hit.body).toBe("grant_type=client_credentials&scope=a+b");
  });

  it("sends one content-type, the caller's, when the caller names one in another case", async () => {
    await makeClient().send({ method: "PATCH", url: `${server.url}/x`, json: {}, headers: { "Content-Type": "application/merge-patch+json" } });
    const hit = server.hits[0]!;
    expect(hit.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === "content-type")).toHaveLength(1);
    expect(hit.headers["content-type"]).toBe("application/merge-patch+json");
  });

  it("parses JSON answers, and calls a body that is not JSON malformed", async () => {
    server.script = [status(200, {}, `{"ok":true}`), status(200, {}, "<html>proxy error</html>")];
    const c = makeClient();
    expect(c.json(await c.send({ method: "GET", url: `${server.url}/x` }))).toEqual({ ok: true });
    const res = await c.send({ method: "GET", url: `${server.url}/x` });
    const err = (() => {
      try {
        c.json(res);
      } catch (e) {
        return e;
      }
    })() as UpstreamError;
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.failure).toBe("malformed");
    expect(callerCode(err)).toBe("UNAVAILABLE");
    expect(err.status).toBe(200);
  });
});

describe("retryAfterMs", () => {
  const now = Date.parse("2026-11-23T12:00:00Z");
  it("reads delta-seconds", () => {
    expect(retryAfterMs("7", now)).toBe(7_000);
    expect(retryAfterMs(" 0 ", now)).toBe(0);
  });
  it("reads an HTTP date, and a past one as no wait", () => {
    expect(retryAfterMs("Mon, 23 Nov 2026 12:00:05 GMT", now)).toBe(5_000);
    expect(retryAfterMs("Mon, 23 Nov 2026 11:00:00 GMT", now)).toBe(0);
  });
  it("ignores what is neither", () => {
    expect(retryAfterMs(undefined, now)).toBeUndefined();
    expect(retryAfterMs("soon", now)).toBeUndefined();
    expect(retryAfterMs("1.5", now)).toBeUndefined();
    expect(retryAfterMs("-1", now)).toBeUndefined();
  });
});

describe("answers handed back to callers that read them", () => {
  it("with acceptRetryableStatus, resolves with the last 429 and its Retry-After once retries run out", async () => {
    server.script = [status(429, { "retry-after": "0" }), status(429, { "retry-after": "7" }, '{"error":"throttled"}')];
    const res = await makeClient({ maxRetries: 1 }).send({ method: "POST", url: `${server.url}/t`, acceptRetryableStatus: true });
    expect(res.status).toBe(429);
    expect(res.headers["retry-after"]).toBe("7");
    expect(res.text).toBe('{"error":"throttled"}');
    expect(server.hits).toHaveLength(2);
  });

  it("without it, the same exhaustion rejects with an UpstreamError carrying the status", async () => {
    server.script = [status(503), status(503)];
    const err = await failure(makeClient({ maxRetries: 1 }).send({ method: "GET", url: `${server.url}/t` }));
    expect(err.status).toBe(503);
  });
});

describe("TLS with an extra CA", () => {
  it("trusts a server whose certificate the extra CA issued, and refuses it without", async () => {
    const { createServer: createHttpsServer } = await import("node:https");
    const { loopbackCertificate } = await import("../fakes/entra-fake.js");
    const tlsMaterial = await loopbackCertificate();
    const https = createHttpsServer({ key: tlsMaterial.key, cert: tlsMaterial.cert }, (_req, res) => res.end('{"ok":true}'));
    await new Promise<void>((resolve) => https.listen(0, "127.0.0.1", () => resolve()));
    const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/`;
    try {
      const trusted = new HttpClient({ system: "tls", ca: tlsMaterial.cert, maxRetries: 0 });
      expect((await trusted.send({ method: "GET", url })).status).toBe(200);
      await trusted.close();
      const untrusted = new HttpClient({ system: "tls", maxRetries: 0 });
      await expect(untrusted.send({ method: "GET", url })).rejects.toBeInstanceOf(UpstreamError);
      await untrusted.close();
    } finally {
      https.closeAllConnections();
      await new Promise<void>((resolve) => https.close(() => resolve()));
    }
  });
});
