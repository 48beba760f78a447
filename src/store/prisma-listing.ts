/**
 * Listings (ListAgents) through the Prisma client: filtered, keyset-paged
 * reads that return whole delegations, where Prisma's typed queries earn
 * their cost. Every state change goes through the driver directly
 * (lifecycle-sql.ts). On SQLite, Prisma's adapter holds its own connection;
 * it only reads, and in WAL mode it sees exactly what has committed.
 */
import type { Delegation } from "../domain/index.js";
import type { PrismaClient } from "./generated/sqlite/client.js";
import { type DelegationRow, delegationFromRow } from "./rows.js";
import type { ListQuery } from "./store.js";

export interface Listing {
  /** A page of delegations in id order, and how many match in all. */
  list(query: ListQuery): Promise<{ items: Delegation[]; total: number }>;
  close(): Promise<void>;
}

type Model = Awaited<ReturnType<PrismaClient["delegation"]["findMany"]>>[number];

/** Prisma's model object in the row shape the one domain mapping reads. */
function rowOf(m: Model): DelegationRow {
  return {
    id: m.id,
    state: m.state,
    agent_type: m.agentType,
    agent_model: m.agentModel,
    agent_did: m.agentDid,
    agent_client_id: m.agentClientId,
    idp_object_id: m.idpObjectId,
    idp_backend: m.idpBackend,
    delegator_did: m.delegatorDid,
    delegator_ac_id: m.delegatorAcId,
    delegated_ac_id: m.delegatedAcId,
    delegated_ac: m.delegatedAc,
    capability_ceiling: m.capabilityCeiling,
    ceremony_required_for: m.ceremonyRequiredFor,
    prohibited_commands: m.prohibitedCommands,
    inherit_corpus: m.inheritCorpus,
    inherit_contexts: m.inheritContexts,
    accord_template: m.accordTemplate,
    max_commands: m.maxCommands,
    commands_executed: m.commandsExecuted,
    depth: m.depth,
    create_time: Number(m.createTime),
    update_time: Number(m.updateTime),
    expire_time: Number(m.expireTime),
    end_time: m.endTime === null ? null : Number(m.endTime),
    end_reason: m.endReason,
    end_detail: m.endDetail,
    root_ac_id: m.rootAcId,
    chronicle_cid: m.chronicleCid,
  };
}

/** A Listing over a Prisma client of either provider (their model APIs are identical). */
export function createPrismaListing(client: PrismaClient): Listing {
  return {
    async list(query) {
      const where = { state: query.state, ...(query.delegatorDid ? { delegatorDid: query.delegatorDid } : {}) };
      const [rows, total] = await Promise.all([
        client.delegation.findMany({
          where: { ...where, ...(query.afterId ? { id: { gt: query.afterId } } : {}) },
          orderBy: { id: "asc" },
          take: query.limit,
        }),
        client.delegation.count({ where }),
      ]);
      return { items: rows.map((m) => delegationFromRow(rowOf(m))), total };
    },
    async close() {
      await client.$disconnect();
    },
  };
}
