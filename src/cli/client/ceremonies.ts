/**
 * `ceremony approve|deny|get|list`: a human's decision on a command that
 * needs one.
 */
import { create } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import {
  ApproveCeremonyResponseSchema,
  type Ceremony,
  CeremonyState,
  DenyCeremonyResponseSchema,
  GetCeremonyResponseSchema,
  ListCeremoniesResponseSchema,
} from "../../gen/llmbroker/v1/delegation_pb.js";
import { EXIT } from "../exit-codes.js";
import { runVerb } from "./call.js";
import type { Done } from "./delegations.js";
import { type ClientFlags, clientOptions, nonEmpty, wholeNumber } from "./options.js";
import type { Output } from "./output.js";
import { ceremonyBlock, ceremonyStateText, ceremonyTable, json, printJson } from "./render.js";
import { collectPages } from "./pages.js";

const STATES = ["pending", "approved", "denied", "expired", "used"] as const;

interface ListFlags extends ClientFlags {
  delegation?: string;
  state: (typeof STATES)[number];
  pageSize?: number;
  pageToken?: string;
  all?: boolean;
}

/** Adds `ceremony` and its verbs to `program`. */
export function addCeremonyVerbs(program: Command, done: Done): void {
  const group = new Command("ceremony").description("approve, deny, show and list ceremonies (a human's approval of one command)");
  program.addCommand(group);

  for (const decision of ["approve", "deny"] as const) {
    clientOptions(
      group
        .command(decision)
        .description(decision === "approve" ? "approve a pending ceremony: the agent may then run that command once" : "deny a pending ceremony")
        .argument("<ceremony_id>", "the ceremony", nonEmpty)
        .option("--reason <text>", "your words, kept with the decision and in the audit log", nonEmpty),
    ).action(async (id: string, flags: ClientFlags & { reason?: string }) =>
      done(
        await runVerb(flags, async (conn, out) => {
          const req = { ceremonyId: id, reason: flags.reason ?? "" };
          let ceremony: Ceremony | undefined;
          if (decision === "approve") {
            const res = await conn.client.approveCeremony(req, conn.unary);
            if (out.json) printJson(out, json(ApproveCeremonyResponseSchema, res));
            ceremony = res.ceremony;
          } else {
            const res = await conn.client.denyCeremony(req, conn.unary);
            if (out.json) printJson(out, json(DenyCeremonyResponseSchema, res));
            ceremony = res.ceremony;
          }
          if (!out.json && ceremony) out.out(summary(ceremony, out));
          return EXIT.ok;
        }),
      ),
    );
  }

  clientOptions(group.command("get").description("show a ceremony").argument("<ceremony_id>", "the ceremony", nonEmpty)).action(
    async (id: string, flags: ClientFlags) =>
      done(
        await runVerb(flags, async (conn, out) => {
          const res = await conn.client.getCeremony({ ceremonyId: id }, conn.unary);
          if (out.json) printJson(out, json(GetCeremonyResponseSchema, res));
          else if (res.ceremony) out.out(ceremonyBlock(res.ceremony, out));
          return EXIT.ok;
        }),
      ),
  );

  clientOptions(
    group
      .command("list")
      .description("list ceremonies you may see, pending ones by default, oldest first")
      .option("--delegation <delegation_id>", "only this delegation's ceremonies", nonEmpty)
      .addOption(new Option("--state <state>", "only ceremonies in this state").choices(STATES).default("pending"))
      .option("--page-size <n>", "ceremonies per page (broker default 50, at most 500)", wholeNumber(1))
      .option("--page-token <token>", "the page after a previous list's", nonEmpty)
      .option("--all", "follow every page"),
  ).action(async (flags: ListFlags) =>
    done(
      await runVerb(flags, async (conn, out) => {
        const state = CeremonyState[flags.state.toUpperCase() as keyof typeof CeremonyState];
        const { items: ceremonies, next: token } = await collectPages<Ceremony>(flags.pageToken ?? "", flags.all === true, async (pageToken) => {
          const page = await conn.client.listCeremonies(
            { delegationId: flags.delegation ?? "", state, pageSize: flags.pageSize ?? 0, pageToken },
            conn.unary,
          );
          return { items: page.ceremonies, next: page.nextPageToken };
        });
        if (out.json) printJson(out, json(ListCeremoniesResponseSchema, create(ListCeremoniesResponseSchema, { ceremonies, nextPageToken: token })));
        else if (ceremonies.length === 0) out.out(`no ${flags.state} ceremonies`);
        else {
          out.out(ceremonyTable(ceremonies, out));
          if (token) out.out(out.color.dim(`more: --page-token ${token} (or --all)`));
        }
        return EXIT.ok;
      }),
    ),
  );
}

function summary(c: Ceremony, out: Output): string {
  return `${c.ceremonyId}  ${ceremonyStateText(c.state, out.color)}  ${c.delegationId}  ${JSON.stringify(c.command)}`;
}
