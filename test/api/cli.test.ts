/**
 * The command line as an operator runs it: `serve` prints where it listens
 * and first calls that work (curl and the CLI), stops cleanly on SIGTERM;
 * `migrate` applies and then reports up to date; bad configuration, a port
 * in use or a database out of reach exits 1 with one clear line naming the
 * setting; start-up warnings go to stderr; no secret is printed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createTestDatabase } from "../helpers/databases.js";

// node --import tsx: the child is the broker itself (the tsx CLI would run it in a grandchild,
// out of reach of a SIGKILL).
const MAIN = join(process.cwd(), "src", "cli", "main.ts");
const dir = mkdtempSync(join(tmpdir(), "lpb-cli-"));

function run(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    env: { ...process.env, LOG_LEVEL: "silent", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, out: () => out, err: () => err };
}

function waitFor(read: () => string, re: RegExp, child: ChildProcess, ms = 20_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const m = read().match(re);
      if (m) {
        clearInterval(timer);
        resolve(m);
      } else if (child.exitCode !== null || Date.now() - start > ms) {
        clearInterval(timer);
        reject(new Error(`no ${re} in output:\n${read()}`));
      }
    }, 50);
    const start = Date.now();
  });
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("llm-broker CLI", () => {
  it("migrate applies the migrations once, then reports up to date", async () => {
    const env = { DATABASE_URL: `file:${join(dir, "m.db")}` };
    const first = run(["migrate"], env);
    expect(await first.exited).toBe(0);
    expect(first.out()).toContain("applied: 20261123000000_init");
    const second = run(["migrate"], env);
    expect(await second.exited).toBe(0);
    expect(second.out()).toMatch(/up to date/);
  });

  it("serve prints its addresses and first calls that work (curl and the CLI), and exits 0 on SIGTERM", async () => {
    const s = run(["serve"], { DATABASE_URL: `file:${join(dir, "s.db")}`, LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: "0" });
    try {
      const [, grpcPort] = await waitFor(s.out, /gRPC \(h2c\)\s+127\.0\.0\.1:(\d+)/, s.child);
      const [curl] = await waitFor(s.out, /curl -s http:\/\/127\.0\.0\.1:\d+\/llmbroker[^]*?\}'/, s.child);
      expect(Number(grpcPort)).toBeGreaterThan(0);
      // Run the printed call as printed (its URL, headers and body).
      const url = curl.match(/http:\/\/\S+/)![0];
      const headers = Object.fromEntries([...curl.matchAll(/-H '([^:]+): ([^']+)'/g)].map((m) => [m[1]!, m[2]!]));
      const body = curl.match(/-d '([^']+)'/)![1]!;
      const res = await fetch(url, { method: "POST", headers, body });
      expect(res.status).toBe(200);
      const json = (await res.json()) as { delegation: { state: string } };
      expect(json.delegation.state).toBe("DELEGATION_STATE_ACTIVE");

      // And the command line's, as printed: its environment, then `npx llm-broker <verb> …`.
      const [, exported] = await waitFor(s.out, /^ {2}export (LLM_BROKER_ADDR=\S+ LLM_BROKER_AS=\S+)$/m, s.child);
      const cliEnv = Object.fromEntries(exported!.split(" ").map((kv) => kv.split("=") as [string, string]));
      expect(cliEnv.LLM_BROKER_ADDR).toBe(`127.0.0.1:${grpcPort}`);
      const [, delegate] = await waitFor(s.out, /^ {2}npx llm-broker (delegate .*)$/m, s.child);
      const made = run(delegate!.split(" "), cliEnv);
      expect(await made.exited).toBe(0);
      expect(made.out()).toMatch(/^del_\w{26} {2}ACTIVE$/m);
      expect(made.out()).toMatch(/^ {2}ceiling +CAP_READ$/m);
    } finally {
      s.child.kill("SIGTERM");
    }
    expect(await s.exited).toBe(0);
  });

  it("exits 1 with 'configuration error' naming the variable", async () => {
    const bad = run(["serve"], { LLM_BROKER_PORT: "seventy" });
    expect(await bad.exited).toBe(1);
    expect(bad.err()).toContain("configuration error: LLM_BROKER_PORT");
  });

  it("a port in use, an unreachable PostgreSQL or an unusable SQLite path is one line naming the setting, exit 1, no password", async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", () => resolve()));
    const port = (busy.address() as AddressInfo).port;
    const notADir = join(dir, "a-file");
    writeFileSync(notADir, "");
    try {
      // What it printed, without the dev-driver warnings.
      const ended = async (r: ReturnType<typeof run>) => ({
        code: await r.exited,
        out: r.out(),
        err: r.err().split("\n").filter((l) => l !== "" && !l.startsWith("warning: ")),
      });
      const [grpcInUse, webInUse, postgres, sqlite] = await Promise.all([
        ended(run(["serve"], { DATABASE_URL: `file:${join(dir, "busy.db")}`, LLM_BROKER_PORT: String(port), LLM_BROKER_WEB_PORT: "0" })),
        ended(run(["serve"], { DATABASE_URL: `file:${join(dir, "busy2.db")}`, LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: String(port) })),
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        ended(run(["serve"], { DATABASE_URL: "postgres://broker:secretpw@127.0.0.1:9/llm", LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: "0" })),
        ended(run(["migrate"], { DATABASE_URL: `file:${join(notADir, "x.db")}` })),
      ]);
      expect(grpcInUse).toEqual({ code: 1, out: "", err: [`error: LLM_BROKER_PORT ${port} is in use on 127.0.0.1 (another broker, or another program, listens there)`] });
      expect(webInUse).toEqual({ code: 1, out: "", err: [`error: LLM_BROKER_WEB_PORT ${port} is in use on 127.0.0.1 (another broker, or another program, listens there)`] });
      expect(postgres).toEqual({ code: 1, out: "", err: ["error: DATABASE_URL: cannot connect to postgres://broker:***@127.0.0.1:9/llm (ECONNREFUSED)"] });
      expect(sqlite.code).toBe(1);
      expect(sqlite.err).toHaveLength(1);
      expect(sqlite.err[0]).toMatch(new RegExp(`^error: DATABASE_URL: cannot open file:${notADir}/x\\.db \\((EEXIST|ENOTDIR): `));
    } finally {
      busy.close();
    }
  });

  it("rejects an unknown command with usage and exit 2", async () => {
    const r = run(["frobnicate"], {});
    expect(await r.exited).toBe(2);
    expect(r.err()).toContain("usage: llm-broker");
  });

  it("a partial configuration exits 1 with one line naming what is missing, and without the secret", async () => {
    const gsap = run(["serve"], { DATABASE_URL: `file:${join(dir, "p.db")}`, GSAP_BROKER_URL: "http://127.0.0.1:9" });
    expect(await gsap.exited).toBe(1);
    expect(gsap.err()).toBe("configuration error: GSAP_DRIVER=auto selects http because GSAP_BROKER_URL is set; http also needs GSAP_BEARER_TOKEN\n");
    expect(gsap.out()).toBe("");

    const secret = "entra-secret-that-must-not-be-printed";
    const entra = run(["serve"], { DATABASE_URL: `file:${join(dir, "p.db")}`, ENTRA_CLIENT_SECRET: secret });
    expect(await entra.exited).toBe(1);
    expect(entra.err()).toBe(
      "configuration error: AGENT_REGISTRAR=auto selects entra because ENTRA_CLIENT_SECRET is set; entra also needs ENTRA_TENANT_ID, ENTRA_CLIENT_ID\n",
    );
  });

  it("jwt authentication with dev drivers exits 1 naming them, unless ALLOW_DEV_DRIVERS=true", async () => {
    const jwt = { AUTH_JWKS_URL: "http://127.0.0.1:9/certs", AUTH_JWT_ISSUER: "http://127.0.0.1:9", AUTH_JWT_AUDIENCE: "llm-broker" };
    const refused = run(["serve"], { DATABASE_URL: `file:${join(dir, "j.db")}`, ...jwt });
    expect(await refused.exited).toBe(1);
    expect(refused.err()).toMatch(/^configuration error: AUTH_MODE=jwt refuses dev drivers: GSAP_DRIVER=dev, AGENT_REGISTRAR=stub, AUDIT_DRIVER=log;[^\n]*ALLOW_DEV_DRIVERS=true\n$/);

    const allowed = run(["serve"], { DATABASE_URL: `file:${join(dir, "j.db")}`, LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: "0", ...jwt, ALLOW_DEV_DRIVERS: "true" });
    try {
      await waitFor(allowed.out, /authentication\s+jwt/, allowed.child);
      for (const d of ["GSAP_DRIVER=dev", "AGENT_REGISTRAR=stub", "AUDIT_DRIVER=log"]) expect(allowed.err()).toContain(`warning: dev driver in use: ${d} (`);
    } finally {
      allowed.child.kill("SIGTERM");
    }
    expect(await allowed.exited).toBe(0);
  });

  it("serve warns on stderr about a variable it does not read, with the close match", async () => {
    const s = run(["serve"], { DATABASE_URL: `file:${join(dir, "w.db")}`, LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: "0", LLM_BROKER_GRPC_PORT: "9000" });
    try {
      await waitFor(s.out, /LLM Principal Broker is running/, s.child);
      const lines = s.err().split("\n");
      expect(lines).toContain("warning: LLM_BROKER_GRPC_PORT is not a setting of the broker and is ignored; did you mean LLM_BROKER_PORT?");
      expect(lines).toContain("warning: dev driver in use: AGENT_REGISTRAR=stub (agents get no identity in an identity provider)");
    } finally {
      s.child.kill("SIGTERM");
    }
    expect(await s.exited).toBe(0);
  });

  it("the banner shows a PostgreSQL DATABASE_URL with its password redacted", async () => {
    const db = await createTestDatabase("postgresql");
    // Trust authentication ignores the password; the broker must still not print it.
    const url = new URL(db.url);
    url.password = "secretpw";
    const s = run(["serve"], { DATABASE_URL: url.toString(), LLM_BROKER_PORT: "0", LLM_BROKER_WEB_PORT: "0" });
    try {
      const [line] = await waitFor(s.out, /database\s+\S+ \(postgresql\)/, s.child);
      expect(line).toMatch(new RegExp(`database\\s+postgres://${url.username}:\\*\\*\\*@${url.host}${url.pathname} \\(postgresql\\)`));
      expect(s.out() + s.err()).not.toContain("secretpw");
    } finally {
      s.child.kill("SIGTERM");
      await s.exited;
      await db.drop();
    }
    expect(s.out() + s.err()).not.toContain("secretpw");
  });
});
