/**
 * The browser dashboard on the web port: the files `npm run build:web` puts in
 * dist/web, read once when the broker starts and served from fixed paths
 * only (`/` and its assets under `/dashboard/`; every other path still goes to
 * Connect). Each answer carries a strict Content-Security-Policy (the page
 * may load and call nothing but its own origin), its content type, an ETag,
 * and caching that suits it: the page is revalidated every time, an asset
 * requested with the `?v=<hash>` the page names is immutable. Without a
 * build, these paths answer 503 saying how to make one.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { WebRoute } from "./create-server.js";

/** The dashboard's paths, the file each serves (relative to the build) and its type. */
export const DASHBOARD_FILES: Readonly<Record<string, { file: string; type: string }>> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/dashboard/app.js": { file: "dashboard/app.js", type: "text/javascript; charset=utf-8" },
  "/dashboard/app.css": { file: "dashboard/app.css", type: "text/css; charset=utf-8" },
  "/dashboard/icon.svg": { file: "dashboard/icon.svg", type: "image/svg+xml" },
};

/**
 * Only this origin, for everything; no inline script or style, no eval, no
 * plugins, no framing, no <base>, forms post only here, and DOM sinks such as
 * innerHTML refuse strings (Trusted Types).
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
].join("; ");

const SECURITY_HEADERS = {
  "content-security-policy": DASHBOARD_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

export const NOT_BUILT_MESSAGE = "The dashboard is not built: run `npm run build:web`, then restart the broker.\n";

/** By default, dist/web of this package (the same from src/server and dist/server). */
const DEFAULT_DIR = fileURLToPath(new URL("../../dist/web/", import.meta.url));

export interface DashboardOptions {
  /** Where the build is. By default, the package's dist/web. */
  dir?: string;
  /** Told once at start when the build is missing. */
  onMissing?: (message: string) => void;
}

interface Asset {
  type: string;
  body: Buffer;
  /** Gzipped body, when that is smaller by enough to matter. */
  gzip: Buffer | undefined;
  /** The first 16 hex digits of the body's SHA-256, as in the page's ?v= (scripts/build-web.mjs). */
  hash: string;
  isPage: boolean;
}

/** The routes for startServer's `routes`, from the build in `dir` as it is now. */
export async function dashboardRoutes(options: DashboardOptions = {}): Promise<Record<string, WebRoute>> {
  const dir = options.dir ?? DEFAULT_DIR;
  let assets: Map<string, Asset>;
  try {
    assets = new Map(
      await Promise.all(
        Object.entries(DASHBOARD_FILES).map(async ([path, { file, type }]) => {
          const body = await readFile(join(dir, file));
          const gz = body.length > 1024 ? gzipSync(body, { level: 9 }) : undefined;
          const asset: Asset = {
            type,
            body,
            gzip: gz && gz.length < body.length * 0.9 ? gz : undefined,
            hash: createHash("sha256").update(body).digest("hex").slice(0, 16),
            isPage: path === "/",
          };
          return [path, asset] as const;
        }),
      ),
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    options.onMissing?.(`${NOT_BUILT_MESSAGE.trim()} (${dir})`);
    const route: WebRoute = { handle: (req, res) => notBuilt(req, res) };
    return Object.fromEntries(Object.keys(DASHBOARD_FILES).map((path) => [path, route]));
  }
  return Object.fromEntries([...assets].map(([path, asset]) => [path, { handle: (req, res) => serve(asset, req, res) } satisfies WebRoute]));
}

function serve(asset: Asset, req: IncomingMessage, res: ServerResponse): void {
  if (!allowedMethod(req, res)) return;
  const etag = `"${asset.hash}"`;
  const versioned = !asset.isPage && new URL(req.url ?? "/", "http://x").searchParams.get("v") === asset.hash;
  const headers: Record<string, string | number> = {
    ...SECURITY_HEADERS,
    etag,
    // The page: always revalidated (cheap, with the ETag), so a new build is seen at once.
    // An asset by its hash never changes; by its bare path it is revalidated too.
    "cache-control": versioned ? "public, max-age=31536000, immutable" : "no-cache",
    vary: "Accept-Encoding",
  };
  if (req.headers["if-none-match"]?.split(",").some((t) => t.trim().replace(/^W\//, "") === etag)) {
    res.writeHead(304, headers).end();
    return;
  }
  const gzip = asset.gzip !== undefined && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
  const body = gzip ? asset.gzip! : asset.body;
  res.writeHead(200, {
    ...headers,
    "content-type": asset.type,
    "content-length": body.length,
    ...(gzip ? { "content-encoding": "gzip" } : {}),
  });
  res.end(req.method === "HEAD" ? undefined : body);
}

function notBuilt(req: IncomingMessage, res: ServerResponse): void {
  if (!allowedMethod(req, res)) return;
  res.writeHead(503, {
    ...SECURITY_HEADERS,
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(NOT_BUILT_MESSAGE),
    "cache-control": "no-store",
  });
  res.end(req.method === "HEAD" ? undefined : NOT_BUILT_MESSAGE);
}

/** GET and HEAD only; anything else is 405 (the request body, if any, is not read). */
function allowedMethod(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method === "GET" || req.method === "HEAD") return true;
  res.writeHead(405, { allow: "GET, HEAD", "content-length": 0 }).end();
  return false;
}
