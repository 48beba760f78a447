// `npm start`: runs the built broker (dist/), building first only when there is
// no build yet or a source (src/, web/, prisma/, proto/) changed since the last
// one, so a start after `npm ci` takes seconds, not a TypeScript compile.
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ensureBuild } from "./ensure-build.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
ensureBuild(root);
// In this process (one process, so the broker's own SIGINT/SIGTERM handling applies as is).
const main = join(root, "dist", "cli", "main.js");
process.argv = [process.argv[0], main, ...process.argv.slice(2)];
await import(pathToFileURL(main).href);
