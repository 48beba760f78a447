/** GetDelegation and ListAgents. */
import { BrokerError, type Delegation, type DelegationState, type Principal, delegationNotFound, invalidArgument } from "../domain/index.js";
import type { DelegationReader } from "../store/store.js";
import { canAct } from "./access.js";
import { decodePageToken, encodePageToken } from "./page-token.js";
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
  /**
   * How many delegations matched the filters when the listing's first page
   * was read. Later pages carry that count in their token instead of
   * counting every match again, so it stays the same on every page of one
   * listing while the pages themselves are read live.
   */
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

  /**
   * A page of delegations in id order (oldest first). The first page counts
   * the matches; its token carries the count to every later page (a token
   * issued before tokens carried it counts once more, then carries it on).
   */
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
    const position = input.pageToken === "" ? undefined : decodePageToken(input.pageToken, filter);
    const { items, total } = await this.store.list({
      state,
      ...(effectiveDid ? { delegatorDid: effectiveDid } : {}),
      ...(position ? { afterId: position.afterId } : {}),
      ...(position?.total !== undefined ? { knownTotal: position.total } : {}),
      limit: pageSize + 1,
    });
    const page = items.slice(0, pageSize);
    const last = page[page.length - 1];
    const nextPageToken = items.length > pageSize && last ? encodePageToken(last.id, filter, total) : "";
    return { items: page, nextPageToken, total };
  }
}
