/** GetDelegation and ListAgents. */
import { BrokerError, type Delegation, type DelegationState, type Principal, delegationNotFound, invalidArgument } from "../domain/index.js";
import type { DelegationReader } from "../store/store.js";
import { canAct } from "./access.js";
import * as v from "./validate.js";

export interface ListInput {
  pageSize: number;
  pageToken: string;
  delegatorDid: string;
  state: DelegationState | undefined;
}

export interface ListResult {
  items: Delegation[];
  nextPageToken: string;
  total: number;
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

export class ReadDelegations {
  private readonly reads: Pick<DelegationReader, "get">;

  constructor(
    private readonly store: DelegationReader,
    /** Where single delegations are read. By default, the store. */
    reads?: Pick<DelegationReader, "get">,
  ) {
    this.reads = reads ?? store;
  }

  /** A delegation with its counters; NOT_FOUND also when it is not the caller's. */
  async get(principal: Principal, delegationId: string): Promise<Delegation> {
    const id = v.delegationId("delegation_id", delegationId);
    const d = await this.reads.get(id);
    if (!d || !canAct(principal, d, "read")) throw delegationNotFound(id);
    return d;
  }

  /** A page of delegations in id order (oldest first). */
  async list(principal: Principal, input: ListInput): Promise<ListResult> {
    if (!Number.isInteger(input.pageSize) || input.pageSize < 0) {
      throw invalidArgument("page_size", "must not be negative");
    }
    if (!principal.admin && principal.did === "") {
      throw new BrokerError("PERMISSION_DENIED", "DELEGATOR_ONLY", "ListAgents needs a delegator identity");
    }
    const pageSize = Math.min(input.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const state = input.state ?? "ACTIVE";
    const delegatorDid = input.delegatorDid === "" ? "" : v.did("delegator_did", input.delegatorDid);
    // A delegator lists only their own delegations; naming someone else's DID finds nothing.
    if (!principal.admin && delegatorDid !== "" && delegatorDid !== principal.did) {
      return { items: [], nextPageToken: "", total: 0 };
    }
    const effectiveDid = principal.admin ? delegatorDid : principal.did;
    const filter = { s: state, d: effectiveDid };
    const afterId = input.pageToken === "" ? undefined : decodePageToken(input.pageToken, filter);
    const { items, total } = await this.store.list({
      state,
      ...(effectiveDid ? { delegatorDid: effectiveDid } : {}),
      ...(afterId ? { afterId } : {}),
      limit: pageSize + 1,
    });
    const page = items.slice(0, pageSize);
    const last = page[page.length - 1];
    const nextPageToken = items.length > pageSize && last ? encodePageToken(last.id, filter) : "";
    return { items: page, nextPageToken, total };
  }
}

interface PageFilter {
  s: string;
  d: string;
}

function encodePageToken(afterId: string, filter: PageFilter): string {
  return Buffer.from(JSON.stringify({ v: 1, a: afterId, ...filter })).toString("base64url");
}

function decodePageToken(token: string, filter: PageFilter): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  const p = parsed as { v?: unknown; a?: unknown; s?: unknown; d?: unknown };
  if (p === null || typeof p !== "object" || p.v !== 1 || typeof p.a !== "string" || !v.isDelegationId(p.a)) {
    throw invalidArgument("page_token", "is not a token this service issued");
  }
  if (p.s !== filter.s || p.d !== filter.d) {
    throw invalidArgument("page_token", "was issued for different filters");
  }
  return p.a;
}
