/**
 * Each server under test runs in its own Node process, so that the baseline
 * and the broker each get a fresh heap and JIT, and neither shares an event
 * loop with the benchmark driver. The child reports its ports over IPC and
 * exits when told to, or when the driver goes away (IPC disconnect).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** What a server child sends once it listens. */
export interface ReadyMessage {
  type: "ready";
  grpcPort: number;
  webPort?: number;
}

export interface ServerProcess {
  ready: ReadyMessage;
  pid: number;
  /**
   * CPU seconds (user + system, all threads) the child has used so far, from
   * /proc; undefined where /proc is unavailable. CPU time per request stays
   * meaningful when other processes compete for the cores, unlike req/s.
   */
  cpuSeconds(): number | undefined;
  /** Sends `message` and resolves with the child's next message of type `reply`. */
  ask<T>(message: { type: string; [key: string]: unknown }, reply: string, timeoutMs?: number): Promise<T>;
  /** Sends a message that needs no answer. */
  tell(message: { type: string }): void;
  /** Asks the child to shut down cleanly; kills it if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  env?: Record<string, string>;
  /** Write a V8 CPU profile of the child into this directory when it exits. */
  cpuProfileDir?: string;
  startTimeoutMs?: number;
  /** Extra Node flags, e.g. --expose-gc. */
  nodeArgs?: string[];
}

const running = new Set<ChildProcess>();

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8", timeout: 5000 });
    const n = Number(r.stdout?.trim());
    clockTicks = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

/** utime + stime of `pid` in seconds, read from /proc/<pid>/stat. */
function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start at field 3; utime and stime are 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/** Kills every server child still running (for SIGINT and fatal errors). */
export function killAllServers(): void {
  for (const child of running) child.kill("SIGKILL");
  running.clear();
}

/** Starts `entry` (relative to bench/servers/) and waits for its ready message. */
export async function startServerProcess(entry: string, options: StartOptions = {}): Promise<ServerProcess> {
  const file = fileURLToPath(new URL(`../servers/${entry}`, import.meta.url));
  const nodeArgs = ["--import", "tsx", ...(options.nodeArgs ?? [])];
  if (options.cpuProfileDir) {
    mkdirSync(options.cpuProfileDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`);
  }
  const child = spawn(process.execPath, [...nodeArgs, file], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env: { ...process.env, ...options.env },
  });
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  exited.then(() => running.delete(child));

  const ready = await new Promise<ReadyMessage>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${entry} did not become ready`));
    }, options.startTimeoutMs ?? 60_000);
    child.on("message", (m: unknown) => {
      if ((m as ReadyMessage | null)?.type === "ready") {
        clearTimeout(timer);
        resolve(m as ReadyMessage);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited with ${code} before it was ready`));
    });
  });

  return {
    ready,
    pid: child.pid!,
    cpuSeconds: () => procCpuSeconds(child.pid!),
    ask<T>(message: { type: string; [key: string]: unknown }, reply: string, timeoutMs = 30_000) {
      return new Promise<T>((resolve, reject) => {
        const onMessage = (m: unknown) => {
          if ((m as { type?: string } | null)?.type !== reply) return;
          clearTimeout(timer);
          child.off("message", onMessage);
          resolve(m as T);
        };
        const timer = setTimeout(() => {
          child.off("message", onMessage);
          reject(new Error(`no ${reply} from the server within ${timeoutMs} ms`));
        }, timeoutMs);
        child.on("message", onMessage);
        child.send(message);
      });
    },
    tell(message: { type: string }) {
      child.send(message);
    },
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ type: "stop" });
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * For the child side: runs `stop` and exits when the driver says so or
 * disappears, so a server never outlives the benchmark.
 */
export function serveUntilStopped(ready: ReadyMessage, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on("message", (m: unknown) => {
    if ((m as { type?: string } | null)?.type === "stop") shutdown();
  });
  process.on("disconnect", shutdown);
  process.on("SIGTERM", shutdown);
  process.send!(ready);
}
