#!/usr/bin/env node
/**
 * `llm-broker`, the package's command line (program.ts lists the verbs).
 * Exit codes: 0 done (authorize: allowed), 1 error from the broker or the
 * connection (serve: could not start), 2 usage, 3 denied, 4 ceremony required.
 */
import { redactSecrets } from "../config/redact.js";
import { SettingsError } from "../config/settings-error.js";
import { EXIT } from "./exit-codes.js";
import { run } from "./program.js";

/** Exits once what was written to stdout and stderr is flushed (they may be pipes). */
function exit(code: number): void {
  process.exitCode = code;
  let pending = 2;
  const done = () => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write("", done);
  process.stderr.write("", done);
}

// A reader that went away (`llm-broker watch | head -3`) ends the command, quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? EXIT.ok);
    throw err;
  });
}

run(process.argv.slice(2)).then(exit, (err: unknown) => {
  // Messages name variables, not secret values; redactSecrets is the guard if one ever slips in.
  if (err instanceof SettingsError) console.error(`configuration error: ${redactSecrets(err.message, process.env)}`);
  else console.error(err);
  exit(EXIT.error);
});
