/**
 * The command line's verbs, parsed by commander: the broker's own (`serve`,
 * `migrate`, `migrate-prototype`, loaded only when run) and the client verbs
 * that speak gRPC to a running broker. Every verb has --help; an unknown
 * verb or option, a missing argument or a bad value is exit code 2 with a
 * message naming it.
 */
import { Command, CommanderError } from "commander";
import { AUTHORIZE_USAGE_HINT, addAuthorizeVerb, addCeremonyVerbs, addDelegationVerbs, addWatchVerb } from "./client/index.js";
import { EXIT } from "./exit-codes.js";
import { MIGRATE_PROTOTYPE_USAGE, parseMigratePrototypeArgs } from "./migrate-prototype-args.js";
import { UsageError } from "./usage-error.js";
import { packageVersion } from "./version.js";

const ABOUT = `
environment (client verbs; a flag wins over its variable):
  LLM_BROKER_ADDR    the broker's gRPC address, host:port or https://host:port (default 127.0.0.1:8092)
  LLM_BROKER_TOKEN   bearer access token (AUTH_MODE=jwt)
  LLM_BROKER_AS      dev mode: the delegator DID to act as
  LLM_BROKER_CERT, LLM_BROKER_KEY, LLM_BROKER_CA
                     client certificate, its key, and the CA of the broker's certificate (AUTH_MODE=mtls)
  NO_COLOR           no colour even on a terminal
The broker's own configuration (serve, migrate) comes from the environment: see .env.example.

exit codes:
  0  done; authorize: allowed
  1  the broker answered with an error, or could not be reached; serve could not start
  2  usage: unknown verb or option, missing argument, bad value
  3  authorize: denied
  4  authorize: a ceremony is required (its id is printed)

examples:
  llm-broker serve
  export LLM_BROKER_AS=did:web:example.com/user/alice
  llm-broker delegate --ac ac-alice-1 --ceiling CAP_READ --ttl 30m --max-commands 10
  llm-broker authorize del_… -- git status
  llm-broker watch --json`;

/** Applies what every command shares (commander copies settings only to commands made after them). */
function configure(cmd: Command, root: boolean): void {
  cmd
    .exitOverride()
    .configureHelp({
      // "usage:", "options:", as the broker's other usage texts write them.
      styleTitle: (title) => (/^[A-Z][a-z ]+:$/.test(title) ? title.toLowerCase() : title),
      // Names only in the list of verbs: their arguments are in each verb's --help.
      subcommandTerm: (sub) => sub.name(),
    })
    .showHelpAfterError(root ? true : `(see: ${path(cmd)} --help)`);
  for (const sub of cmd.commands) configure(sub, false);
}

function path(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** The program; `done` receives the exit code of the verb that ran. */
export function buildProgram(done: (code: number) => void): Command {
  const program = new Command("llm-broker")
    .description("LLM Principal Broker: delegate a narrowed, time-boxed, budgeted slice of a human's authority to an AI agent")
    .version(packageVersion(), "-V, --version", "print the version")
    .enablePositionalOptions()
    .addHelpText("after", ABOUT);

  program.commandsGroup("broker:");
  program
    .command("serve")
    .description("start the broker (applies pending migrations first); configured by the environment")
    .action(async () => done(await (await import("./server-verbs.js")).serve()));
  program
    .command("migrate")
    .description("apply pending migrations to DATABASE_URL and exit")
    .action(async () => done(await (await import("./server-verbs.js")).migrateDatabase()));
  program
    .command("migrate-prototype")
    .description("import the Python prototype's delegations into DATABASE_URL")
    .usage("<prototype.db> [--dry-run] [--json]")
    .argument("[args...]")
    // Its own parser (migrate-prototype-args.ts) reads the options, --help included, and names a wrong one.
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .configureHelp({ formatHelp: () => `${MIGRATE_PROTOTYPE_USAGE}\n` })
    .action(async (argv: string[]) => {
      const args = parseMigratePrototypeArgs(argv);
      if (args === "help") {
        console.log(MIGRATE_PROTOTYPE_USAGE);
        return done(EXIT.ok);
      }
      if (typeof args === "string") {
        console.error(`migrate-prototype: ${args}\n\n${MIGRATE_PROTOTYPE_USAGE}`);
        return done(EXIT.usage);
      }
      done(await (await import("./server-verbs.js")).migratePrototypeDatabase(args));
    });

  program.commandsGroup("delegations (client verbs, over gRPC to a running broker):");
  addDelegationVerbs(program, done);
  addAuthorizeVerb(program, done);
  addWatchVerb(program, done);
  program.commandsGroup("ceremonies:");
  addCeremonyVerbs(program, done);
  program.commandsGroup("help:");

  configure(program, true);
  // (The migrate-prototype usage stays its own, also after an error.)
  program.commands.find((c) => c.name() === "migrate-prototype")?.showHelpAfterError(false);
  program.commands.find((c) => c.name() === "authorize")?.showHelpAfterError(AUTHORIZE_USAGE_HINT);
  return program;
}

/** Parses `argv` (without node and the script) and runs the verb; resolves with the exit code. */
export async function run(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  let current: Command | undefined;
  const program = buildProgram((c) => {
    code = c;
  });
  program.hook("preAction", (_, action) => {
    current = action;
  });
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    if (err instanceof UsageError) {
      console.error(`error: ${err.message}${current ? `\n(see: ${path(current)} --help)` : ""}`);
      return EXIT.usage;
    }
    throw err;
  }
}
