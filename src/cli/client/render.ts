/**
 * Delegations, ceremonies and watch events as people read them, and the
 * JSON scripts read (the messages' canonical proto3 JSON, the same as
 * Connect's and curl's, with every field present).
 */
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Ceremony,
  CeremonyState,
  type Delegation,
  DelegationEventType,
  DelegationState,
  type WatchDelegationsResponse,
} from "../../gen/llmbroker/v1/delegation_pb.js";
import { type Colors, type Output, fields, listOf, relative, table, when } from "./output.js";

/** A message as canonical proto3 JSON with every field, for --json. */
export function json<D extends DescMessage>(schema: D, message: MessageShape<D>): unknown {
  return toJson(schema, message, { alwaysEmitImplicit: true });
}

/** One JSON document on stdout (indented); a watch prints one compact object per line instead. */
export function printJson(out: Output, value: unknown): void {
  out.out(JSON.stringify(value, null, 2));
}

const ms = (t: Timestamp | undefined) => (t ? timestampMs(t) : undefined);

/** ACTIVE, REVOKED, … coloured by what they mean. */
export function stateText(state: DelegationState, c: Colors): string {
  const name = DelegationState[state] ?? String(state);
  if (state === DelegationState.ACTIVE) return c.green(name);
  if (state === DelegationState.REVOKED || state === DelegationState.FAILED) return c.red(name);
  if (state === DelegationState.EXPIRED) return c.yellow(name);
  return name;
}

export function ceremonyStateText(state: CeremonyState, c: Colors): string {
  const name = CeremonyState[state] ?? String(state);
  if (state === CeremonyState.APPROVED || state === CeremonyState.USED) return c.green(name);
  if (state === CeremonyState.DENIED) return c.red(name);
  if (state === CeremonyState.PENDING) return c.yellow(name);
  return name;
}

function ending(d: Delegation): string | undefined {
  if (!d.endReason) return undefined;
  return d.endDetail && d.endDetail !== d.endReason ? `${d.endReason}: ${d.endDetail}` : d.endReason;
}

/** The expiry of a live delegation, or when and why it ended. */
function timeLeft(d: Delegation, now: number): string {
  const ended = ms(d.endTime);
  if (ended !== undefined) return `ended ${relative(ended, now)}`;
  const expires = ms(d.expireTime);
  return expires === undefined ? "-" : relative(expires, now);
}

/** Everything about one delegation, a field a line. */
export function delegationBlock(d: Delegation, out: Output): string {
  const c = out.color;
  const now = out.now();
  const created = ms(d.createTime);
  const expires = ms(d.expireTime);
  const ended = ms(d.endTime);
  return [
    `${c.bold(d.delegationId)}  ${stateText(d.state, c)}`,
    fields(
      [
        ["agent", `${d.agentType}${d.agentModel ? ` (${d.agentModel})` : ""}`],
        ["agent DID", d.agentDid || undefined],
        ["agent client", d.agentClientId ? `${d.agentClientId}${d.idpBackend ? ` (${d.idpBackend})` : ""}` : undefined],
        ["delegator", d.delegatorDid || undefined],
        ["delegator context", d.delegatorAcId || undefined],
        ["delegated context", d.delegatedAcId || undefined],
        ["ceiling", d.capabilityCeiling || undefined],
        ["commands", `${d.commandsExecuted} of ${d.maxCommands} used, ${d.commandsRemaining} left`],
        ["ceremony for", listOf(d.ceremonyRequiredFor)],
        ["prohibited", listOf(d.prohibitedCommands)],
        ["created", created === undefined ? undefined : when(created, now)],
        ["expires", expires === undefined ? undefined : when(expires, now)],
        ["ended", ended === undefined ? undefined : `${when(ended, now)}: ${ending(d) ?? "-"}`],
        ["depth", d.depth > 1 ? String(d.depth) : undefined],
      ],
      c,
    ),
  ].join("\n");
}

/** Delegations as a table. */
export function delegationTable(ds: readonly Delegation[], out: Output): string {
  const now = out.now();
  return table(
    ["DELEGATION", "STATE", "AGENT", "CEILING", "COMMANDS", "EXPIRES", "DELEGATOR"],
    ds.map((d) => [
      d.delegationId,
      stateText(d.state, out.color),
      d.agentType,
      d.capabilityCeiling,
      `${d.commandsExecuted}/${d.maxCommands}`,
      timeLeft(d, now),
      d.delegatorDid,
    ]),
    out.color,
  );
}

/** Everything about one ceremony. */
export function ceremonyBlock(cer: Ceremony, out: Output): string {
  const c = out.color;
  const now = out.now();
  const at = (t: Timestamp | undefined) => {
    const v = ms(t);
    return v === undefined ? undefined : when(v, now);
  };
  return [
    `${c.bold(cer.ceremonyId)}  ${ceremonyStateText(cer.state, c)}`,
    fields(
      [
        ["delegation", cer.delegationId],
        ["command", cer.command],
        ["matched", cer.matchedRule || undefined],
        ["requested", at(cer.requestTime)],
        ["expires", at(cer.expireTime)],
        ["decided", cer.decideTime ? `${at(cer.decideTime)}${cer.decidedBy ? ` by ${cer.decidedBy}` : ""}` : undefined],
        ["reason", cer.reason || undefined],
        ["used", at(cer.useTime)],
      ],
      c,
    ),
  ].join("\n");
}

/** Ceremonies as a table. */
export function ceremonyTable(cs: readonly Ceremony[], out: Output): string {
  const now = out.now();
  return table(
    ["CEREMONY", "STATE", "DELEGATION", "EXPIRES", "COMMAND"],
    cs.map((cer) => {
      const expires = ms(cer.expireTime);
      return [
        cer.ceremonyId,
        ceremonyStateText(cer.state, out.color),
        cer.delegationId,
        expires === undefined ? "-" : relative(expires, now),
        cer.command,
      ];
    }),
    out.color,
  );
}

/** The longest event type but one (COMMAND_LIMIT_REACHED is rare): events line up. */
const TYPE_WIDTH = "CEREMONY_REQUESTED".length;

/** One line per watch event: time, revision, kind, delegation and what changed. */
export function eventLine(m: WatchDelegationsResponse, out: Output): string | undefined {
  if (m.kind.case !== "event") return undefined;
  const e = m.kind.value;
  const c = out.color;
  const d = e.delegation;
  const at = ms(e.eventTime) ?? out.now();
  const type = DelegationEventType[e.type] ?? String(e.type);
  const colored =
    e.type === DelegationEventType.CREATED || e.type === DelegationEventType.CEREMONY_APPROVED
      ? c.green(type)
      : e.type === DelegationEventType.REVOKED || e.type === DelegationEventType.FAILED || e.type === DelegationEventType.CEREMONY_DENIED
        ? c.red(type)
        : c.yellow(type);
  let what: string;
  if (e.ceremony) {
    what = `${e.ceremony.ceremonyId} ${JSON.stringify(e.ceremony.command)}`;
  } else if (e.type === DelegationEventType.CREATED && d) {
    const expires = ms(d.expireTime);
    what = `${d.agentType} ${d.capabilityCeiling}, ${d.maxCommands} commands${expires === undefined ? "" : `, expires ${relative(expires, out.now())}`}`;
  } else {
    what = (d && ending(d)) || e.reason;
  }
  const actor = e.actor ? c.dim(`  (by ${e.actor})`) : "";
  const time = new Date(at).toISOString().replace(/\.\d{3}Z$/, "Z");
  return `${c.dim(time)}  ${c.dim(`#${m.revision}`)}  ${colored}${" ".repeat(Math.max(0, TYPE_WIDTH - type.length))}  ${d?.delegationId ?? "-"}  ${what}${actor}`;
}
