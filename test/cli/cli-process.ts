/**
 * Runs `llm-broker` as a user does, in a process of its own
 * (`node --import tsx src/cli/main.ts`: dist may be stale, and the child is
 * the CLI itself, so a signal reaches it), and collects what it prints.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";

const MAIN = join(process.cwd(), "src", "cli", "main.ts");

export interface Ran {
  code: number | null;
  out: string;
  err: string;
}

export interface Running {
  child: ChildProcess;
  out(): string;
  err(): string;
  exited: Promise<Ran>;
}

/** Starts the CLI with `args`; `env` on top of this process's (without the CLI's own variables). */
export function start(args: string[], env: Record<string, string> = {}): Running {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^LLM_BROKER_|^NO_COLOR$/.test(k)));
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    env: { ...base, LOG_LEVEL: "silent", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<Ran>((resolve) => child.on("close", (code) => resolve({ code, out, err })));
  return { child, out: () => out, err: () => err, exited };
}

/** Runs the CLI to its end. */
export function cli(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return start(args, env).exited;
}

/** Resolves once `read()` matches `re` (or rejects after `ms`, or when the process ended without it). */
export async function waitFor(read: () => string, re: RegExp, p: Running, ms = 20_000): Promise<RegExpMatchArray> {
  const started = Date.now();
  for (;;) {
    const m = read().match(re);
    if (m) return m;
    if (p.child.exitCode !== null || Date.now() - started > ms) {
      throw new Error(`no ${re} in:\n--- stdout\n${p.out()}\n--- stderr\n${p.err()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A port nothing listens on now (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
