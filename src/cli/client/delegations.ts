/**
 * The delegation verbs: delegate, get, list, revoke, revoke-context.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type Command, Option } from "commander";
import {
  type CreateDelegationResponse,
  CreateDelegationResponseSchema,
  type Delegation,
  DelegationState,
  GetDelegationResponseSchema,
  ListAgentsResponseSchema,
  RevokeDelegationResponseSchema,
  RevokeDelegatorContextResponseSchema,
} from "../../gen/llmbroker/v1/delegation_pb.js";
import { EXIT } from "../exit-codes.js";
import { UsageError } from "../usage-error.js";
import { runVerb } from "./call.js";
import type { Connection } from "./connection.js";
import { type ClientFlags, clientOptions, collect, nonEmpty, parseDuration, wholeNumber } from "./options.js";
import { type Output, fields } from "./output.js";
import { delegationBlock, delegationTable, json, printJson, stateText } from "./render.js";
import { collectPages } from "./pages.js";

/** The verbs' actions, given their exit code. */
export type Done = (code: number) => void;

interface DelegateFlags extends ClientFlags {
  delegatorAcId?: string;
  parent?: string;
  ceiling?: string;
  ttl?: number;
  maxCommands?: number;
  ceremonyFor?: string[];
  ceremonies: boolean;
  prohibit?: string[];
  agentType?: string;
  agentModel?: string;
  accordTemplate?: string;
  requestId?: string;
  inheritCorpus: boolean;
  inheritContexts: boolean;
}

const STATES = ["requested", "active", "expired", "revoked", "failed"] as const;

/** Adds delegate, get, list, revoke and revoke-context to `program`. */
export function addDelegationVerbs(program: Command, done: Done): void {
  clientOptions(
    program
      .command("delegate")
      .description("delegate a slice of your authority to a new agent; prints its credential once")
      .addOption(new Option("--ac, --delegator-ac-id <ac_id>", "your own access context to delegate from").argParser(nonEmpty).conflicts("parent"))
      .option("--parent <delegation_id>", "delegate on from this delegation's delegated context (an agent delegating)", nonEmpty)
      .option("--ceiling <capability>", "capability ceiling, e.g. CAP_READ (default: the broker's DEFAULT_CAPABILITY_CEILING)", nonEmpty)
      .option("--ttl <duration>", "how long it lives, e.g. 30m, 2h (default: the broker's, 60m)", parseDuration)
      .option("--max-commands <n>", "command budget (default: the broker's, 500)", wholeNumber(1))
      .addOption(new Option("--ceremony-for <command>", "a command that needs a human's approval; repeat for more (default: delete, destroy, drop)").argParser(collect).conflicts("ceremonies"))
      .option("--no-ceremonies", "no command needs a human's approval")
      .option("--prohibit <command>", "a command that is always denied; repeat for more", collect)
      .option("--agent-type <type>", "the agent's type (default: claude-code)", nonEmpty)
      .option("--agent-model <model>", "the agent's model, for the record", nonEmpty)
      .option("--accord-template <name>", "GSAP accord template (default: ai-delegation-standard)", nonEmpty)
      .option("--request-id <id>", "idempotency key: a retry with the same id replays the first answer", nonEmpty)
      .option("--no-inherit-corpus", "the agent does not inherit your corpus")
      .option("--no-inherit-contexts", "the agent does not inherit your contexts"),
  ).action(async (flags: DelegateFlags) => done(await runVerb(flags, (conn, out) => delegate(conn, out, flags))));

  clientOptions(
    program.command("get").description("show a delegation with its commands and time left").argument("<delegation_id>", "the delegation", nonEmpty),
  ).action(async (id: string, flags: ClientFlags) =>
    done(
      await runVerb(flags, async (conn, out) => {
        const res = await conn.client.getDelegation({ delegationId: id }, conn.unary);
        if (out.json) printJson(out, json(GetDelegationResponseSchema, res));
        else if (res.delegation) out.out(delegationBlock(res.delegation, out));
        return EXIT.ok;
      }),
    ),
  );

  clientOptions(
    program
      .command("list")
      .description("list delegations, active ones by default, oldest first")
      .addOption(new Option("--state <state>", "only delegations in this state").choices(STATES).default("active"))
      .option("--delegator <did>", "only delegations of this delegator", nonEmpty)
      .option("--page-size <n>", "delegations per page (broker default 50, at most 500)", wholeNumber(1))
      .option("--page-token <token>", "the page after a previous list's", nonEmpty)
      .option("--all", "follow every page"),
  ).action(async (flags: ListFlags) => done(await runVerb(flags, (conn, out) => list(conn, out, flags))));

  clientOptions(
    program
      .command("revoke")
      .description("end an active delegation, and every delegation made from it")
      .argument("<delegation_id>", "the delegation", nonEmpty)
      .option("--reason <text>", "your words, kept with the ending (default: manual_revocation)", nonEmpty)
      .option("--request-id <id>", "idempotency key: a retry with the same id replays the first answer", nonEmpty),
  ).action(async (id: string, flags: ClientFlags & { reason?: string; requestId?: string }) =>
    done(
      await runVerb(flags, async (conn, out) => {
        const res = await conn.client.revokeDelegation({ delegationId: id, reason: flags.reason ?? "", requestId: flags.requestId ?? "" }, conn.unary);
        if (out.json) printJson(out, json(RevokeDelegationResponseSchema, res));
        else if (res.delegation) out.out(`revoked ${summary(res.delegation, out)}`);
        return EXIT.ok;
      }),
    ),
  );

  clientOptions(
    program
      .command("revoke-context")
      .description("admin: GSAP revoked a delegator access context; end every delegation made from it")
      .argument("<ac_id>", "the delegator access context", nonEmpty)
      .option("--reason <text>", "your words, kept with each ending", nonEmpty),
  ).action(async (ac: string, flags: ClientFlags & { reason?: string }) =>
    done(
      await runVerb(flags, async (conn, out) => {
        const res = await conn.client.revokeDelegatorContext({ delegatorAcId: ac, reason: flags.reason ?? "" }, conn.unary);
        if (out.json) printJson(out, json(RevokeDelegatorContextResponseSchema, res));
        else if (res.revokedDelegationIds.length === 0) out.out(`no live delegation was made from ${ac}`);
        else out.out([`revoked ${res.revokedDelegationIds.length} delegation(s) made from ${ac}:`, ...res.revokedDelegationIds.map((i) => `  ${i}`)].join("\n"));
        return EXIT.ok;
      }),
    ),
  );
}

/** "del_…  REVOKED  manual_revocation: done". */
function summary(d: Delegation, out: Output): string {
  const why = d.endReason ? `  ${d.endReason}${d.endDetail && d.endDetail !== d.endReason ? `: ${d.endDetail}` : ""}` : "";
  return `${d.delegationId}  ${stateText(d.state, out.color)}${why}`;
}

async function delegate(conn: Connection, out: Output, f: DelegateFlags): Promise<number> {
  let delegatorAcId = f.delegatorAcId;
  if (f.parent !== undefined) {
    const parent = await conn.client.getDelegation({ delegationId: f.parent }, conn.unary);
    delegatorAcId = parent.delegation?.delegatedAcId;
    if (!delegatorAcId) throw new UsageError(`--parent ${f.parent} has no delegated access context to delegate from`);
  }
  if (delegatorAcId === undefined) throw new UsageError("delegate needs --ac <ac_id> (your access context) or --parent <delegation_id>");
  const res = await conn.client.createDelegation(
    {
      delegatorAcId,
      agentType: f.agentType ?? "",
      agentModel: f.agentModel ?? "",
      accordTemplate: f.accordTemplate ?? "",
      requestId: f.requestId ?? "",
      scope: {
        capabilityCeiling: f.ceiling ?? "",
        ceremonyRequiredFor: f.ceremonyFor ?? [],
        prohibitedCommands: f.prohibit ?? [],
        noCeremonies: !f.ceremonies,
        ...(f.ttl !== undefined ? { ttl: durationFromMs(f.ttl) } : {}),
        ...(f.maxCommands !== undefined ? { maxCommands: f.maxCommands } : {}),
        ...(f.inheritCorpus ? {} : { inheritCorpus: false }),
        ...(f.inheritContexts ? {} : { inheritContexts: false }),
      },
    },
    conn.unary,
  );
  notesOnCreate(res, out, f.requestId);
  if (out.json) {
    printJson(out, json(CreateDelegationResponseSchema, res));
    return EXIT.ok;
  }
  const lines: string[] = [];
  if (res.delegation) lines.push(delegationBlock(res.delegation, out));
  const secret = res.agentCredential?.clientSecret ?? "";
  if (res.agentCredential) {
    lines.push(
      "",
      out.color.bold(secret ? "agent credential (shown once: store it now)" : "agent credential"),
      fields(
        [
          ["client_id", res.agentCredential.clientId],
          ["client_secret", secret || undefined],
        ],
        out.color,
      ),
    );
  }
  out.out(lines.join("\n"));
  return EXIT.ok;
}

/** What the user must know about the answer, on stderr: the secret's single hand-out, a replay, a pending approval. */
function notesOnCreate(res: CreateDelegationResponse, out: Output, requestId: string | undefined): void {
  const secret = res.agentCredential?.clientSecret ?? "";
  if (secret) {
    out.note("warning: the agent's client secret is printed this once and cannot be retrieved again; store it now (a secret manager, not a shell history)");
  }
  if (res.credentialRotated) out.note("note: the secret was rotated for this retry: every earlier secret of this agent no longer works");
  else if (res.replayed) out.note(`note: replayed the first answer of request id ${requestId ?? ""}; its secret went to the first caller`);
  if (res.approvalPending) {
    out.note(
      `note: GSAP has not approved the delegation yet (${DelegationState[res.delegation?.state ?? 0]}); run the same command again${requestId ? ` with --request-id ${requestId}` : " with the same --request-id"} once it is ACTIVE to get the credential`,
    );
  }
}

interface ListFlags extends ClientFlags {
  state: (typeof STATES)[number];
  delegator?: string;
  pageSize?: number;
  pageToken?: string;
  all?: boolean;
}

async function list(conn: Connection, out: Output, f: ListFlags): Promise<number> {
  const state = DelegationState[f.state.toUpperCase() as keyof typeof DelegationState];
  let total = 0;
  const { items: delegations, next: token } = await collectPages<Delegation>(f.pageToken ?? "", f.all === true, async (pageToken) => {
    const page = await conn.client.listAgents({ state, delegatorDid: f.delegator ?? "", pageSize: f.pageSize ?? 0, pageToken }, conn.unary);
    total = page.totalSize;
    return { items: page.delegations, next: page.nextPageToken };
  });
  if (out.json) {
    printJson(out, json(ListAgentsResponseSchema, create(ListAgentsResponseSchema, { delegations, nextPageToken: token, totalSize: total })));
    return EXIT.ok;
  }
  const what = `${f.state} delegation${total === 1 ? "" : "s"}`;
  if (delegations.length === 0) {
    out.out(`no ${what}`);
    return EXIT.ok;
  }
  out.out(delegationTable(delegations, out));
  const more = token ? `; next page: --page-token ${token} (or --all)` : "";
  out.out(out.color.dim(`${delegations.length} of ${total} ${what}${more}`));
  return EXIT.ok;
}
