/**
 * A broker in a process of its own, as `llm-broker serve` runs it, for tests
 * that kill it (SIGKILL) or run several replicas. Started with
 * `node --import tsx` so the child is the broker itself (the tsx CLI would
 * run it in a grandchild, out of reach of a SIGKILL).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { GrpcTestClient } from "./grpc-client.js";

const MAIN = join(process.cwd(), "src", "cli", "main.ts");

export interface BrokerProcess {
  proc: ChildProcess;
  grpc: GrpcTestClient;
  grpcPort: number;
  webPort: number;
  stdout(): string;
  stderr(): string;
  /** SIGKILL: no shutdown, no lease release, whatever was in flight is cut off. */
  kill(): Promise<void>;
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>;
}

/** Starts `serve` with `env` on top of this process's environment; resolves once it prints where it listens. */
export async function startBrokerProcess(env: Record<string, string>, timeoutMs = 30_000): Promise<BrokerProcess> {
  const proc = spawn(process.execPath, ["--import", "tsx", MAIN, "serve"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stdout!.on("data", (d) => (out += d));
  proc.stderr!.on("data", (d) => (err += d));
  // A test process that ends (a failed beforeAll, a closed output pipe) must not leave brokers running.
  const orphanGuard = () => proc.kill("SIGKILL");
  process.once("exit", orphanGuard);
  const exited = new Promise<void>((resolve) =>
    proc.once("exit", () => {
      process.removeListener("exit", orphanGuard);
      resolve();
    }),
  );
  const started = Date.now();
  for (;;) {
    const m = out.match(/gRPC \(h2c\)\s+127\.0\.0\.1:(\d+)[^]*?Connect \+ gRPC-Web\s+http:\/\/127\.0\.0\.1:(\d+)/);
    if (m) {
      const grpc = new GrpcTestClient(`127.0.0.1:${m[1]}`);
      const end = async (signal: NodeJS.Signals) => {
        grpc.close();
        if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
        await exited;
      };
      return {
        proc,
        grpc,
        grpcPort: Number(m[1]),
        webPort: Number(m[2]),
        stdout: () => out,
        stderr: () => err,
        kill: () => end("SIGKILL"),
        stop: () => end("SIGTERM"),
      };
    }
    if (proc.exitCode !== null || Date.now() - started > timeoutMs) {
      proc.kill("SIGKILL");
      throw new Error(`broker did not start:\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
