/**
 * What the store conformance suites share: a delegation factory, and a
 * harness that gives each test a fresh, migrated database of one driver and
 * seeds delegations through the store's own operations.
 */
import { afterEach, beforeEach, expect } from "vitest";
import type { DelegatedContext, Delegation, DelegationEvent, EffectKind } from "../../src/domain/index.js";
import { newDelegationId } from "../../src/delegation/ids.js";
import { openStore } from "../../src/store/open-store.js";
import type { ActivationPatch, DelegationStore, Effect, IdempotencyClaim } from "../../src/store/store.js";
import { createTestDatabase, type Driver, type TestDatabase } from "../helpers/databases.js";

// Past 2^32 ms, so a time squeezed through a 32-bit integer anywhere would show.
export const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
export const HOUR = 3_600_000;
/** Later than any time a test uses: "everything is due". */
export const FAR = T0 + 1000 * HOUR;

/** A REQUESTED delegation as CreateDelegation builds it; overrides win. */
export function makeDelegation(overrides: Partial<Delegation> = {}): Delegation {
  const createTime = overrides.createTime ?? T0;
  const id = overrides.id ?? newDelegationId(createTime);
  return {
    id,
    state: "REQUESTED",
    agentType: "claude-code",
    agentModel: "claude-opus-4",
    agentDid: `did:web:agents.example:claude-code-${id}`,
    agentClientId: "",
    idpObjectId: "",
    idpBackend: "stub",
    delegatorDid: "did:web:example.com:users/alice",
    delegatorAcId: "ac-alice-1",
    delegatedAcId: "",
    delegatedAc: null,
    capabilityCeiling: "L2",
    ceremonyRequiredFor: ["git push", "kubectl delete"],
    prohibitedCommands: ["rm -rf /"],
    inheritCorpus: true,
    inheritContexts: false,
    accordTemplate: "default",
    maxCommands: 100,
    commandsExecuted: 0,
    depth: 1,
    createTime,
    updateTime: createTime,
    expireTime: createTime + HOUR,
    endTime: null,
    endReason: "",
    endDetail: "",
    rootAcId: overrides.delegatorAcId ?? "ac-alice-1",
    chronicleCid: "",
    ...overrides,
  };
}

export function makeContext(d: Delegation, overrides: Partial<DelegatedContext> = {}): DelegatedContext {
  return {
    contextId: `dac-${d.id}`,
    status: "ACTIVE",
    principalDid: d.agentDid,
    delegationId: d.id,
    capabilityCeiling: d.capabilityCeiling,
    expireTime: d.expireTime,
    attributes: { issuer: "gsap", nested: { list: [1, "two", null], ok: true } },
    ...overrides,
  };
}

/** What activation records for `d`: identity and delegated context named after it. */
export function activationFor(d: Delegation, overrides: Partial<ActivationPatch> = {}): ActivationPatch {
  return {
    agentClientId: `client-${d.id}`,
    idpObjectId: `obj-${d.id}`,
    idpBackend: "keycloak",
    delegatedAcId: `dac-${d.id}`,
    delegatedAc: makeContext(d),
    ...overrides,
  };
}

/** `d` as activation with `activationFor(d)` at `now` leaves it. */
export function activated(d: Delegation, now: number): Delegation {
  const p = activationFor(d);
  return { ...d, ...p, state: "ACTIVE", updateTime: now };
}

export function claimFor(d: Delegation, overrides: Partial<IdempotencyClaim> = {}): IdempotencyClaim {
  return {
    scope: d.delegatorDid,
    method: "CreateDelegation",
    requestId: "req-1",
    requestHash: "hash-1",
    delegationId: d.id,
    ...overrides,
  };
}

export const byRevision = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);
export const sortedIds = (ds: readonly { id: string }[]): string[] => ds.map((d) => d.id).sort();

/** `n` consecutive revisions starting after `head`. */
export const revisionsAfter = (head: bigint, n: number): bigint[] => Array.from({ length: n }, (_, i) => head + BigInt(i + 1));

export type SeedState = "REQUESTED" | "ACTIVE" | "REVOKED" | "EXPIRED" | "FAILED";

export interface Harness {
  readonly store: DelegationStore;
  readonly url: string;
  /**
   * Inserts a delegation and moves it to `state` through the store itself:
   * ACTIVE by activate (at createTime + 1, with `activationFor`), REVOKED and
   * EXPIRED from ACTIVE (at createTime + 2, without cascade), FAILED from
   * REQUESTED. Returns the delegation as stored.
   */
  seed(state?: SeedState, overrides?: Partial<Delegation>): Promise<Delegation>;
  /** An ACTIVE delegation made from `parent`'s delegated context. */
  seedChild(parent: Delegation, state?: SeedState, overrides?: Partial<Delegation>): Promise<Delegation>;
  /** The work items of `kind` the endings after its cursor call for (the cursor stays). */
  effects(kind: EffectKind): Promise<Effect[]>;
  /** Every event after `after`. */
  events(after?: bigint): Promise<DelegationEvent[]>;
}

/** Registers the hooks that give each test its own database and store; read `store` inside tests only. */
export function useStore(driver: Driver): Harness {
  let db: TestDatabase | undefined;
  let store: DelegationStore | undefined;

  beforeEach(async () => {
    db = await createTestDatabase(driver);
    store = await openStore(db.url);
  });

  afterEach(async () => {
    await store?.close();
    await db?.drop();
    store = undefined;
    db = undefined;
  });

  const current = (): DelegationStore => {
    if (!store) throw new Error("no store outside a test");
    return store;
  };

  const h: Harness = {
    get store() {
      return current();
    },
    get url() {
      if (!db) throw new Error("no database outside a test");
      return db.url;
    },
    async seed(state = "REQUESTED", overrides = {}) {
      const s = current();
      const d = makeDelegation(overrides);
      expect(await s.insertRequested(d)).toEqual({ kind: "claimed" });
      if (state === "REQUESTED") return d;
      if (state === "FAILED") {
        const [failed] = await s.end({ target: { ids: [d.id] }, ending: "fail", reason: "creation_failed", now: d.createTime + 2, cascade: false });
        return failed!.delegation;
      }
      const active = await s.activate({ id: d.id, now: d.createTime + 1, patch: activationFor(d) });
      if (state === "ACTIVE") return active!.delegation;
      const [ended] = await s.end({
        target: { ids: [d.id] },
        ending: state === "REVOKED" ? "revoke" : "expire",
        reason: `seeded_${state.toLowerCase()}`,
        now: d.createTime + 2,
        cascade: false,
      });
      return ended!.delegation;
    },
    seedChild(parent, state = "ACTIVE", overrides = {}) {
      expect(parent.delegatedAcId).not.toBe("");
      return h.seed(state, {
        delegatorDid: parent.agentDid,
        delegatorAcId: parent.delegatedAcId,
        depth: parent.depth + 1,
        expireTime: parent.expireTime,
        ...overrides,
      });
    },
    async effects(kind) {
      return (await current().pendingEndings(kind, 10_000)).items;
    },
    events(after = 0n) {
      return current().readEvents(after, 10_000);
    },
  };
  return h;
}
