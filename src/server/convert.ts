/** Converts between domain objects and the generated protobuf messages. */
import { type JsonObject, create } from "@bufbuild/protobuf";
import { type Timestamp, durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  type AuthorizeCommandResponse,
  AuthorizeCommandResponseSchema,
  type Ceremony as CeremonyMessage,
  CeremonySchema,
  CeremonyState as CeremonyStateEnum,
  CommandDecision,
  type CreateDelegationResponse,
  CreateDelegationResponseSchema,
  type DelegatedAccessContext,
  DelegatedAccessContextSchema,
  type Delegation as DelegationMessage,
  DelegationEventType,
  DelegationSchema,
  DelegationState as StateEnum,
  type DelegationScope,
  type WatchDelegationsResponse,
  WatchDelegationsResponseSchema,
} from "../gen/llmbroker/v1/delegation_pb.js";
import { invalidArgument } from "../domain/index.js";
import type {
  AuthorizeResult,
  Ceremony,
  CeremonyState,
  CreateResult,
  DelegatedContext,
  Delegation,
  DelegationState,
  EventType,
} from "../domain/index.js";
import { commandsRemaining } from "../domain/index.js";
import type { RequestedScope } from "../delegation/policy.js";
import type { WatchItem } from "../events/watch-hub.js";

const STATE_TO_ENUM: Record<DelegationState, StateEnum> = {
  REQUESTED: StateEnum.REQUESTED,
  ACTIVE: StateEnum.ACTIVE,
  EXPIRED: StateEnum.EXPIRED,
  REVOKED: StateEnum.REVOKED,
  FAILED: StateEnum.FAILED,
};

const EVENT_TO_ENUM: Record<EventType, DelegationEventType> = {
  CREATED: DelegationEventType.CREATED,
  REVOKED: DelegationEventType.REVOKED,
  EXPIRED: DelegationEventType.EXPIRED,
  FAILED: DelegationEventType.FAILED,
  COMMAND_LIMIT_REACHED: DelegationEventType.COMMAND_LIMIT_REACHED,
  CEREMONY_REQUESTED: DelegationEventType.CEREMONY_REQUESTED,
  CEREMONY_APPROVED: DelegationEventType.CEREMONY_APPROVED,
  CEREMONY_DENIED: DelegationEventType.CEREMONY_DENIED,
  CEREMONY_EXPIRED: DelegationEventType.CEREMONY_EXPIRED,
  CEREMONY_USED: DelegationEventType.CEREMONY_USED,
  // Not on Watch streams (the hub leaves them out).
  COMMAND_DECIDED: DelegationEventType.UNSPECIFIED,
};

const CEREMONY_STATE_TO_ENUM: Record<CeremonyState, CeremonyStateEnum> = {
  PENDING: CeremonyStateEnum.PENDING,
  APPROVED: CeremonyStateEnum.APPROVED,
  DENIED: CeremonyStateEnum.DENIED,
  EXPIRED: CeremonyStateEnum.EXPIRED,
  USED: CeremonyStateEnum.USED,
};

/** The state filter of ListCeremonies; UNSPECIFIED means the default. */
export function ceremonyStateFromEnum(value: CeremonyStateEnum): CeremonyState | undefined {
  if (value === CeremonyStateEnum.UNSPECIFIED) return undefined;
  const found = (Object.entries(CEREMONY_STATE_TO_ENUM) as [CeremonyState, CeremonyStateEnum][]).find(([, v]) => v === value);
  if (!found) throw invalidArgument("state", `unknown ceremony state ${value as number}`);
  return found[0];
}

export function ceremonyToMessage(c: Ceremony): CeremonyMessage {
  return create(CeremonySchema, {
    ceremonyId: c.id,
    delegationId: c.delegationId,
    state: CEREMONY_STATE_TO_ENUM[c.state],
    command: c.command,
    commandSha256: c.commandHash,
    matchedRule: c.matchedRule,
    requestTime: ts(c.requestTime),
    expireTime: ts(c.expireTime),
    decidedBy: c.decidedBy,
    decideTime: ts(c.decideTime),
    reason: c.reason,
    useTime: ts(c.useTime),
  });
}

const ts = (ms: number | null): Timestamp | undefined => (ms === null ? undefined : timestampFromMs(ms));

/** The state filter of ListAgents; UNSPECIFIED means the default. */
export function stateFromEnum(value: StateEnum): DelegationState | undefined {
  switch (value) {
    case StateEnum.UNSPECIFIED:
      return undefined;
    case StateEnum.REQUESTED:
      return "REQUESTED";
    case StateEnum.ACTIVE:
      return "ACTIVE";
    case StateEnum.EXPIRED:
      return "EXPIRED";
    case StateEnum.REVOKED:
      return "REVOKED";
    case StateEnum.FAILED:
      return "FAILED";
    default:
      throw invalidArgument("state", `unknown state ${value as number}`);
  }
}

function durationMs(d: Duration, field: string): number {
  const ms = Number(d.seconds) * 1000 + Math.trunc(d.nanos / 1e6);
  if (!Number.isSafeInteger(ms) || d.nanos < -999_999_999 || d.nanos > 999_999_999) {
    throw invalidArgument(field, "is not a valid duration");
  }
  return ms;
}

/** The requested scope, keeping "unset" distinct from zero values. */
export function scopeFromMessage(scope: DelegationScope | undefined): RequestedScope {
  if (!scope) return {};
  const out: RequestedScope = {};
  if (scope.capabilityCeiling !== "") out.capabilityCeiling = scope.capabilityCeiling;
  if (scope.inheritCorpus !== undefined) out.inheritCorpus = scope.inheritCorpus;
  if (scope.inheritContexts !== undefined) out.inheritContexts = scope.inheritContexts;
  if (scope.ceremonyRequiredFor.length > 0) out.ceremonyRequiredFor = scope.ceremonyRequiredFor;
  if (scope.prohibitedCommands.length > 0) out.prohibitedCommands = scope.prohibitedCommands;
  if (scope.ttl) out.ttlMs = durationMs(scope.ttl, "scope.ttl");
  if (scope.maxCommands !== undefined) out.maxCommands = scope.maxCommands;
  if (scope.noCeremonies) out.noCeremonies = true;
  return out;
}

/** A delegation as the API shows it, with the time left at `now`. */
export function delegationToMessage(d: Delegation, now: number = Date.now()): DelegationMessage {
  const live = d.state === "ACTIVE" || d.state === "REQUESTED";
  return create(DelegationSchema, {
    delegationId: d.id,
    state: STATE_TO_ENUM[d.state],
    agentType: d.agentType,
    agentModel: d.agentModel,
    agentDid: d.agentDid,
    agentClientId: d.agentClientId,
    idpBackend: d.idpBackend,
    delegatorDid: d.delegatorDid,
    delegatorAcId: d.delegatorAcId,
    delegatedAcId: d.delegatedAcId,
    capabilityCeiling: d.capabilityCeiling,
    ceremonyRequiredFor: d.ceremonyRequiredFor,
    prohibitedCommands: d.prohibitedCommands,
    maxCommands: d.maxCommands,
    commandsExecuted: d.commandsExecuted,
    commandsRemaining: commandsRemaining(d),
    createTime: ts(d.createTime),
    expireTime: ts(d.expireTime),
    endTime: ts(d.endTime),
    endReason: d.endReason,
    endDetail: d.endDetail,
    chronicleCid: d.chronicleCid,
    timeRemaining: durationFromMs(live ? Math.max(0, d.expireTime - now) : 0),
    inheritCorpus: d.inheritCorpus,
    inheritContexts: d.inheritContexts,
    accordTemplate: d.accordTemplate,
    depth: d.depth,
  });
}

function delegatedAcToMessage(ac: DelegatedContext): DelegatedAccessContext {
  return create(DelegatedAccessContextSchema, {
    contextId: ac.contextId,
    status: ac.status,
    principalDid: ac.principalDid,
    delegationId: ac.delegationId,
    capabilityCeiling: ac.capabilityCeiling,
    expireTime: ts(ac.expireTime),
    attributes: ac.attributes as JsonObject,
  });
}

export function createResultToMessage(r: CreateResult): CreateDelegationResponse {
  return create(CreateDelegationResponseSchema, {
    delegation: delegationToMessage(r.delegation),
    agentPrincipal: r.agentPrincipal,
    ...(r.delegatedAc ? { delegatedAc: delegatedAcToMessage(r.delegatedAc) } : {}),
    agentCredential: r.agentCredential,
    replayed: r.replayed,
    credentialRotated: r.credentialRotated,
    approvalPending: r.approvalPending,
  });
}

const DECISION: Record<AuthorizeResult["decision"], CommandDecision> = {
  ALLOW: CommandDecision.ALLOW,
  DENY: CommandDecision.DENY,
  CEREMONY_REQUIRED: CommandDecision.CEREMONY_REQUIRED,
};

export function authorizeResultToMessage(r: AuthorizeResult): AuthorizeCommandResponse {
  return create(AuthorizeCommandResponseSchema, {
    decision: DECISION[r.decision],
    reason: r.reason,
    commandsRemaining: r.commandsRemaining,
    matchedRule: r.matchedRule,
    ceremonyId: r.ceremonyId,
  });
}

/**
 * Messages of events, one per event: the hub hands every subscriber the same
 * item, so the message (and, in the grpc-js adapter, its encoding) is made
 * once per event, not once per watcher.
 */
const eventMessages = new WeakMap<WatchItem, WatchDelegationsResponse>();

export function watchItemToMessage(item: WatchItem): WatchDelegationsResponse {
  if (item.kind === "event") {
    let m = eventMessages.get(item);
    if (!m) eventMessages.set(item, (m = eventItemToMessage(item)));
    return m;
  }
  return create(WatchDelegationsResponseSchema, { revision: item.revision, kind: { case: "checkpoint", value: {} } });
}

function eventItemToMessage(item: Extract<WatchItem, { kind: "event" }>): WatchDelegationsResponse {
  const e = item.event;
  return create(WatchDelegationsResponseSchema, {
    revision: item.revision,
    kind: {
      case: "event",
      value: {
        type: EVENT_TO_ENUM[e.type],
        delegation: delegationToMessage(e.delegation, e.eventTime),
        eventTime: timestampFromMs(e.eventTime),
        reason: e.reason,
        actor: e.actor,
        ...(e.ceremony ? { ceremony: ceremonyToMessage(e.ceremony) } : {}),
      },
    },
  });
}
