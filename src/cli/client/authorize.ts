/**
 * `authorize <delegation_id> <command...>`: may the agent run this command
 * now? The decision is the exit code (0 ALLOW, 3 DENY, 4 CEREMONY_REQUIRED),
 * so a shell can gate a command on it: `llm-broker authorize "$D" -- rm x && rm x`.
 */
import type { Command } from "commander";
import { AuthorizeCommandResponseSchema, CommandDecision } from "../../gen/llmbroker/v1/delegation_pb.js";
import { EXIT } from "../exit-codes.js";
import { runVerb } from "./call.js";
import type { Done } from "./delegations.js";
import { type ClientFlags, clientOptions, nonEmpty } from "./options.js";
import { json, printJson } from "./render.js";

/** What to do about an unknown option, which is most likely the command's own. */
export const AUTHORIZE_USAGE_HINT = '(a command with options of its own goes after --: llm-broker authorize <delegation_id> -- <command...>; see llm-broker authorize --help)';

/** A word as a POSIX shell reads it back. */
function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Adds authorize to `program`. */
export function addAuthorizeVerb(program: Command, done: Done): void {
  clientOptions(
    program
      .command("authorize")
      .description("ask whether the agent may run a command now (counted if allowed)")
      .argument("<delegation_id>", "the delegation", nonEmpty)
      .argument("<command...>", "the command line; put it after -- when it has options of its own")
      .option("--ceremony-id <id>", "an approved ceremony for this very command: allowed once", nonEmpty)
      .addHelpText(
        "after",
        `
exit codes: 0 allowed, 3 denied, 4 ceremony required (its id is printed), 1 error, 2 usage.

examples:
  llm-broker authorize del_… git status
  llm-broker authorize del_… -- psql -c "DROP TABLE t"
  llm-broker authorize --ceremony-id cer_… del_… -- psql -c "DROP TABLE t"`,
      ),
  ).action(async (id: string, words: string[], flags: ClientFlags & { ceremonyId?: string }) =>
    done(
      await runVerb(flags, async (conn, out) => {
        const command = words.join(" ");
        const res = await conn.client.authorizeCommand({ delegationId: id, command, ceremonyId: flags.ceremonyId ?? "" }, conn.unary);
        const c = out.color;
        const rule = res.matchedRule ? ` (matched "${res.matchedRule}")` : "";
        switch (res.decision) {
          case CommandDecision.ALLOW:
            if (out.json) printJson(out, json(AuthorizeCommandResponseSchema, res));
            else out.out(`${c.green("ALLOW")}  ${res.reason}; ${res.commandsRemaining} command(s) left${res.ceremonyId ? `; used ceremony ${res.ceremonyId}` : ""}`);
            return EXIT.ok;
          case CommandDecision.CEREMONY_REQUIRED:
            if (out.json) printJson(out, json(AuthorizeCommandResponseSchema, res));
            else {
              out.out(`${c.yellow("CEREMONY_REQUIRED")}  ${res.reason}${rule}; ceremony ${c.bold(res.ceremonyId)}`);
              out.note(`the delegator approves it with: llm-broker ceremony approve ${res.ceremonyId}`);
              out.note(`then ask again with: llm-broker authorize --ceremony-id ${res.ceremonyId} ${id} -- ${words.map(shellQuote).join(" ")}`);
            }
            return EXIT.ceremonyRequired;
          default:
            if (out.json) printJson(out, json(AuthorizeCommandResponseSchema, res));
            else out.out(`${c.red("DENY")}  ${res.reason}${rule}`);
            return EXIT.denied;
        }
      }),
    ),
  );
}
