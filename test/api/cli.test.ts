/**
 * The command line as an operator runs it: `serve` prints where it listens
 * and a first call that works, stops cleanly on SIGTERM; `migrate` applies
 * and then reports up to date; bad configuration exits 1 with a clear line.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

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

  it("serve prints its addresses and a first call that works, and exits 0 on SIGTERM", async () => {
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

  it("rejects an unknown command with usage and exit 2", async () => {
    const r = run(["frobnicate"], {});
    expect(await r.exited).toBe(2);
    expect(r.err()).toContain("usage: llm-broker");
  });
});
