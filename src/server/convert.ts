/** Converts between domain objects and the generated protobuf messages. */
import { type JsonObject, create } from "@bufbuild/protobuf";
import { type Timestamp, durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  type AuthorizeCommandResponse,
  AuthorizeCommandResponseSchema,
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
};

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
    delegatedAc: delegatedAcToMessage(r.delegatedAc),
    agentCredential: r.agentCredential,
    replayed: r.replayed,
    credentialRotated: r.credentialRotated,
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
      },
    },
  });
}
