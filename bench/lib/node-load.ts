/** Runs the Node load generator (node-load-worker.ts) in a child process and returns its result. */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { LoadResult, LoadSpec } from "./load.js";

const WORKER = fileURLToPath(new URL("./node-load-worker.ts", import.meta.url));

export async function runNodeLoad(spec: LoadSpec): Promise<LoadResult> {
  const { body, ...rest } = spec;
  const wire = { ...rest, bodyBase64: Buffer.from(body).toString("base64") };
  return new Promise<LoadResult>((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", WORKER], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, BENCH_LOAD_SPEC: JSON.stringify(wire) },
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    // The worker bounds itself; this only guards against a hang.
    const guard = setTimeout(() => child.kill("SIGKILL"), (spec.durationS + 45) * 1000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(guard);
      const line = out.split("\n").find((l) => l.startsWith("RESULT "));
      if (code === 0 && line) resolve(JSON.parse(line.slice("RESULT ".length)) as LoadResult);
      else reject(new Error(`node load generator exited with ${code}: ${out}`));
    });
  });
}
