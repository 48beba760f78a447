/** Delegations written straight into a database, for benchmarks that need many (creating them through the API would take hours). */
import type { Delegation } from "../../src/domain/index.js";

/** A delegation of the bench delegator with id del_<i, 26 digits>, as stored; `over` replaces fields. */
export function benchDelegation(i: number, over: Partial<Delegation> = {}): Delegation {
  const id = `del_${String(i).padStart(26, "0")}`;
  const now = Date.now();
  return {
    id,
    state: "ACTIVE",
    agentType: "bench",
    agentModel: "",
    agentDid: `did:web:bench/agent/${id}`,
    agentClientId: `stub-agent-bench-${id}`,
    idpObjectId: id,
    idpBackend: "stub",
    delegatorDid: "did:web:example.com/user/alice",
    delegatorAcId: "ac-bench",
    delegatedAcId: `ac-dev-${id}`,
    delegatedAc: null,
    capabilityCeiling: "CAP_READ",
    ceremonyRequiredFor: [],
    prohibitedCommands: [],
    inheritCorpus: true,
    inheritContexts: true,
    accordTemplate: "ai-delegation-standard",
    maxCommands: 10_000_000,
    commandsExecuted: 0,
    depth: 1,
    createTime: now,
    updateTime: now,
    expireTime: now + 24 * 3600_000,
    endTime: null,
    endReason: "",
    endDetail: "",
    rootAcId: "ac-bench",
    chronicleCid: "",
    ...over,
  };
}
