/**
 * Runs one client verb: connects with its options, runs it, and reports a
 * failed call on stderr (a line, or a JSON object with --json) with exit 1.
 * A UsageError is left to the caller (exit 2).
 */
import { UsageError } from "../usage-error.js";
import { type Connection, connect } from "./connection.js";
import { describeFailure } from "./errors.js";
import type { ClientFlags } from "./options.js";
import { type Output, createOutput } from "./output.js";

/** What a verb does once connected; resolves with its exit code. */
export type Verb = (conn: Connection, out: Output) => Promise<number>;

/** Runs `verb` with the connection `flags` describe. */
export async function runVerb(flags: ClientFlags, verb: Verb, options: { watch?: boolean } = {}): Promise<number> {
  const out = createOutput(flags.json === true);
  const conn = connect(flags, options.watch === true);
  try {
    return await verb(conn, out);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    return reportFailure(err, conn.target, out);
  }
}

/** Prints a failed call; returns its exit code. */
export function reportFailure(err: unknown, target: string, out: Output): number {
  const f = describeFailure(err, target);
  out.note(out.json ? JSON.stringify({ error: f.json }) : `error: ${f.line}`);
  return f.exit;
}
