/**
 * The dashboard's routes on the web port (src/server/dashboard.ts): the page
 * and its assets from their exact paths only, each with its content type,
 * the strict CSP and security headers, an ETag (304 on a match), gzip when
 * asked, and caching that suits it (the page revalidated, a hashed asset
 * immutable); 405 for other methods; 503 with the build command when there is
 * no build; and every other path still reaching Connect. Through the broker
 * itself: DASHBOARD_ENABLED=false leaves `/` to Connect.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { createHash } from "node:crypto";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DelegationService } from "../../src/gen/llmbroker/v1/delegation_service_pb.js";
import { type RunningServer, startServer } from "../../src/server/create-server.js";
import { DASHBOARD_CSP, NOT_BUILT_MESSAGE, dashboardRoutes } from "../../src/server/dashboard.js";
import { ALICE, as, startTestBroker } from "../helpers/broker.js";

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function http(port: number, path: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // A body always with its length: Node sends DELETE's body unframed otherwise.
    const length = options.body === undefined ? {} : { "content-length": String(Buffer.byteLength(options.body)) };
    const req = request({ host: "127.0.0.1", port, path, method: options.method ?? "GET", headers: { ...length, ...options.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

const hash16 = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 16);

/** A build as scripts/build-web.mjs lays it out, with recognisable contents. */
type BuildFile = "index.html" | "dashboard/app.js" | "dashboard/app.css" | "dashboard/icon.svg";

function fixtureBuild(): { dir: string; files: Record<BuildFile, string> } {
  const dir = mkdtempSync(join(tmpdir(), "dashboard-build-"));
  mkdirSync(join(dir, "dashboard"));
  const files: Record<BuildFile, string> = {
    "dashboard/app.js": `console.log("app");\n${"// padding so that gzip pays off\n".repeat(100)}`,
    "dashboard/app.css": "body { color: #111; }\n",
    "dashboard/icon.svg": '<svg xmlns="http://www.w3.org/2000/svg"/>\n',
    "index.html": "",
  };
  files["index.html"] = `<!doctype html><title>t</title><script type="module" src="/dashboard/app.js?v=${hash16(files["dashboard/app.js"])}"></script>\n`;
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return { dir, files };
}

/** A service whose every method is UNIMPLEMENTED: that answer shows a request reached Connect. */
const noService = Object.fromEntries(
  DelegationService.methods.map((m) => [
    m.localName,
    () => {
      throw new ConnectError("not here", Code.Unimplemented);
    },
  ]),
) as unknown as ServiceImpl<typeof DelegationService>;

describe("dashboard routes", () => {
  const { dir, files } = fixtureBuild();
  const missing = mkdtempSync(join(tmpdir(), "dashboard-missing-"));
  let built: RunningServer;
  let notBuilt: RunningServer;
  const told: string[] = [];

  beforeAll(async () => {
    const base = { host: "127.0.0.1", grpcPort: 0, webPort: 0, corsOrigins: [] };
    built = await startServer(noService, { ...base, routes: await dashboardRoutes({ dir }) });
    notBuilt = await startServer(noService, { ...base, routes: await dashboardRoutes({ dir: missing, onMissing: (m) => told.push(m) }) });
  });
  afterAll(async () => {
    await built?.close();
    await notBuilt?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(missing, { recursive: true, force: true });
  });

  it.each([
    ["/", "index.html", "text/html; charset=utf-8"],
    ["/dashboard/app.js", "dashboard/app.js", "text/javascript; charset=utf-8"],
    ["/dashboard/app.css", "dashboard/app.css", "text/css; charset=utf-8"],
    ["/dashboard/icon.svg", "dashboard/icon.svg", "image/svg+xml"],
  ] as const)("serves %s with its content type, the CSP and the security headers", async (path, file, type) => {
    const a = await http(built.webPort, path);
    expect(a.status).toBe(200);
    expect(a.body.toString()).toBe(files[file]);
    expect(a.headers).toMatchObject({
      "content-type": type,
      "content-length": String(Buffer.byteLength(files[file])),
      "content-security-policy": DASHBOARD_CSP,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY",
      "cross-origin-opener-policy": "same-origin",
      etag: `"${hash16(files[file])}"`,
    });
    expect(a.headers["content-encoding"]).toBeUndefined();
  });

  it("has a CSP that allows this origin only, and no inline script, style or eval", () => {
    const directives = Object.fromEntries(DASHBOARD_CSP.split("; ").map((d) => [d.split(" ")[0], d.split(" ").slice(1).join(" ")]));
    expect(directives).toMatchObject({
      "default-src": "'self'",
      "script-src": "'self'",
      "style-src": "'self'",
      "connect-src": "'self'",
      "object-src": "'none'",
      "frame-ancestors": "'none'",
      "base-uri": "'none'",
    });
    expect(DASHBOARD_CSP).not.toMatch(/unsafe|\*|data:|http/);
  });

  it("lets the page be revalidated every time, and a hashed asset be cached for good", async () => {
    expect((await http(built.webPort, "/")).headers["cache-control"]).toBe("no-cache");
    expect((await http(built.webPort, "/dashboard/app.js")).headers["cache-control"]).toBe("no-cache");
    const versioned = await http(built.webPort, `/dashboard/app.js?v=${hash16(files["dashboard/app.js"])}`);
    expect(versioned.status).toBe(200);
    expect(versioned.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    // A stale hash (an old page) gets today's file, but not for keeps.
    expect((await http(built.webPort, "/dashboard/app.js?v=0000000000000000")).headers["cache-control"]).toBe("no-cache");
  });

  it("answers 304 to a matching If-None-Match, and the file to another", async () => {
    const first = await http(built.webPort, "/");
    const again = await http(built.webPort, "/", { headers: { "if-none-match": String(first.headers.etag) } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect(again.headers.etag).toBe(first.headers.etag);
    expect((await http(built.webPort, "/", { headers: { "if-none-match": '"other"' } })).status).toBe(200);
  });

  it("gzips what is worth it when the browser accepts it", async () => {
    const a = await http(built.webPort, "/dashboard/app.js", { headers: { "accept-encoding": "gzip, deflate, br" } });
    expect(a.headers["content-encoding"]).toBe("gzip");
    expect(a.headers.vary).toBe("Accept-Encoding");
    expect(gunzipSync(a.body).toString()).toBe(files["dashboard/app.js"]);
    expect(Number(a.headers["content-length"])).toBe(a.body.length);
  });

  it("answers HEAD with the headers and no body, and refuses other methods with 405", async () => {
    const head = await http(built.webPort, "/", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(head.body.length).toBe(0);
    for (const method of ["POST", "PUT", "DELETE"]) {
      const a = await http(built.webPort, "/", { method, body: "x" });
      expect(a.status).toBe(405);
      expect(a.headers.allow).toBe("GET, HEAD");
    }
  });

  it("serves only its exact paths: everything else still reaches Connect", async () => {
    for (const path of ["/index.html", "/dashboard/", "/dashboard/app.js.map", "/dashboard/../index.html", "/web/index.html", "//"]) {
      const a = await http(built.webPort, path);
      expect(a.headers["content-security-policy"], path).toBeUndefined();
      expect(a.status, path).toBe(404);
    }
    // An RPC goes to Connect, which answers for the service: unimplemented, not the dashboard.
    const rpc = await http(built.webPort, "/llmbroker.v1.DelegationService/ListAgents", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(rpc.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(rpc.body.toString())).toMatchObject({ code: "unimplemented" });
  });

  it("without a build answers 503 on its paths saying how to build it, and says so once at start", async () => {
    for (const path of ["/", "/dashboard/app.js"]) {
      const a = await http(notBuilt.webPort, path);
      expect(a.status).toBe(503);
      expect(a.headers["content-type"]).toBe("text/plain; charset=utf-8");
      expect(a.headers["cache-control"]).toBe("no-store");
      expect(a.body.toString()).toBe(NOT_BUILT_MESSAGE);
    }
    expect(NOT_BUILT_MESSAGE).toContain("npm run build:web");
    expect(NOT_BUILT_MESSAGE.trim().split("\n")).toHaveLength(1);
    expect(told).toHaveLength(1);
    expect(told[0]).toContain(missing);
  });
});

describe("DASHBOARD_ENABLED through the broker", () => {
  it("false: no dashboard, / goes to Connect; the RPCs work as before", async () => {
    const t = await startTestBroker({ env: { DASHBOARD_ENABLED: "false" } });
    try {
      const a = await http(t.broker.webPort, "/");
      expect(a.status).toBe(404);
      expect(a.headers["content-security-policy"]).toBeUndefined();
      expect((await http(t.broker.webPort, "/healthz")).status).toBe(200);
      expect((await t.connect.listAgents({}, { headers: as(ALICE) })).delegations).toEqual([]);
    } finally {
      await t.close();
    }
  });

  it("true (the default): / is the dashboard (built or not), and the RPCs work beside it", async () => {
    const t = await startTestBroker();
    try {
      const a = await http(t.broker.webPort, "/");
      expect([200, 503]).toContain(a.status);
      expect(a.headers["content-security-policy"]).toBe(DASHBOARD_CSP);
      expect((await t.connect.listAgents({}, { headers: as(ALICE) })).delegations).toEqual([]);
    } finally {
      await t.close();
    }
  });
});
