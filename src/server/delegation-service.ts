/**
 * The DelegationService implementation, shared by every transport (grpc-js,
 * Connect, gRPC-Web). It translates messages to use-case inputs and back.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { UseCases } from "../delegation/use-cases.js";
import type { EventFilter } from "../store/store.js";
import type { WatchHub } from "../events/watch-hub.js";
import type { Principal } from "../domain/index.js";
import type { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import { BrokerError } from "../domain/index.js";
import * as v from "../delegation/validate.js";
import {
  authorizeResultToMessage,
  ceremonyStateFromEnum,
  ceremonyToMessage,
  createResultToMessage,
  delegationToMessage,
  scopeFromMessage,
  stateFromEnum,
  watchItemToMessage,
} from "./convert.js";
import { getDelegationAnswer } from "./encoded-delegation.js";
import { principalOf } from "./principal.js";
import { streamWriterKey } from "./stream-writer.js";

export interface DelegationServiceDeps {
  useCases: UseCases;
  hub: WatchHub;
}

/** Creates the service implementation. */
export function createDelegationService(deps: DelegationServiceDeps): ServiceImpl<typeof DelegationService> {
  const { useCases, hub } = deps;
  return {
    async createDelegation(req, ctx) {
      const result = await useCases.create.run(
        principalOf(ctx),
        {
          delegatorAcId: req.delegatorAcId,
          agentType: req.agentType,
          agentModel: req.agentModel,
          accordTemplate: req.accordTemplate,
          scope: scopeFromMessage(req.scope),
          requestId: req.requestId,
        },
        ctx.signal,
        ctx.timeoutMs(),
      );
      return createResultToMessage(result);
    },

    async revokeDelegation(req, ctx) {
      const d = await useCases.end.revoke(principalOf(ctx), {
        delegationId: req.delegationId,
        reason: req.reason,
        requestId: req.requestId,
      });
      return { delegation: delegationToMessage(d) };
    },

    async getDelegation(req, ctx) {
      return getDelegationAnswer(await useCases.read.get(principalOf(ctx), req.delegationId));
    },

    async listAgents(req, ctx) {
      const page = await useCases.read.list(principalOf(ctx), {
        pageSize: req.pageSize,
        pageToken: req.pageToken,
        delegatorDid: req.delegatorDid,
        state: stateFromEnum(req.state),
      });
      const now = Date.now();
      return {
        delegations: page.items.map((d) => delegationToMessage(d, now)),
        nextPageToken: page.nextPageToken,
        totalSize: page.total,
      };
    },

    // Not a generator of its own: the hub's watch is the stream (one frame for the stream's life).
    watchDelegations(req, ctx) {
      const principal = principalOf(ctx);
      // Where the transport can take writes directly, live messages go straight to it.
      const sink = ctx.values.get(streamWriterKey);
      return hub.watch({
        startRevision: req.startRevision,
        filter: () => watchFilter(useCases, principal, req),
        signal: ctx.signal,
        map: watchItemToMessage,
        ...(sink ? { sink } : {}),
      });
    },

    async revokeDelegatorContext(req, ctx) {
      const ids = await useCases.end.revokeDelegatorContext(principalOf(ctx), {
        delegatorAcId: req.delegatorAcId,
        reason: req.reason,
      });
      return { revokedDelegationIds: ids };
    },

    async authorizeCommand(req, ctx) {
      const r = await useCases.authorize.run(principalOf(ctx), { delegationId: req.delegationId, command: req.command, ceremonyId: req.ceremonyId });
      return authorizeResultToMessage(r);
    },

    async approveCeremony(req, ctx) {
      return { ceremony: ceremonyToMessage(await useCases.ceremonies.approve(principalOf(ctx), { ceremonyId: req.ceremonyId, reason: req.reason })) };
    },

    async denyCeremony(req, ctx) {
      return { ceremony: ceremonyToMessage(await useCases.ceremonies.deny(principalOf(ctx), { ceremonyId: req.ceremonyId, reason: req.reason })) };
    },

    async getCeremony(req, ctx) {
      return { ceremony: ceremonyToMessage(await useCases.ceremonies.get(principalOf(ctx), req.ceremonyId)) };
    },

    async listCeremonies(req, ctx) {
      const page = await useCases.ceremonies.list(principalOf(ctx), {
        delegationId: req.delegationId,
        state: ceremonyStateFromEnum(req.state),
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      return { ceremonies: page.items.map(ceremonyToMessage), nextPageToken: page.nextPageToken };
    },
  };
}

/**
 * What a caller may watch: one delegation they may see (NOT_FOUND otherwise,
 * the same as for a missing one), their own delegations, or (admins)
 * everything; null when the filter names someone else's delegations.
 */
async function watchFilter(
  useCases: UseCases,
  principal: Principal,
  req: { delegationId: string; delegatorDid: string },
): Promise<EventFilter | null> {
  const filter: EventFilter = {};
  if (req.delegationId !== "") filter.delegationId = (await useCases.read.get(principal, req.delegationId)).id;
  if (req.delegatorDid !== "") filter.delegatorDid = v.did("delegator_did", req.delegatorDid);
  if (principal.admin) return filter;
  // A delegator watches only their own delegations; a caller without a DID (an agent) only its own one.
  if (filter.delegationId === undefined && principal.did === "") {
    throw new BrokerError("PERMISSION_DENIED", "DELEGATOR_ONLY", "watching all delegations needs a delegator identity; name a delegation_id");
  }
  if (filter.delegatorDid !== undefined && filter.delegatorDid !== principal.did) return null;
  if (filter.delegationId === undefined) filter.delegatorDid = principal.did;
  return filter;
}
