/**
 * Listings (ListAgents) through the Prisma client: filtered, keyset-paged
 * reads that return whole delegations. Every state change goes through the
 * driver directly (lifecycle-sql.ts). On SQLite, Prisma's adapter holds its
 * own connection; it only reads, and in WAL mode it sees exactly what has
 * committed.
 *
 * The page is one raw statement (the same text on both databases), written
 * so that only the composite indexes can answer it, on every page:
 *
 *   WHERE [delegator_did = $d AND] (state, id) > ($s, $after) AND state <= $s
 *   ORDER BY state, id LIMIT $n
 *
 * i.e. state = $s AND id > $after, in id order. Written as `state = $s ...
 * ORDER BY id` (Prisma's typed query), PostgreSQL may walk the primary key
 * in id order and filter on state, on the assumption that each state is
 * spread evenly over the ids; ids are time-ordered, so the live
 * delegations are the newest, and the first ACTIVE page then reads every
 * ended delegation before it (253 ms at 1,000,000 rows, 0.5 ms now; see
 * bench/list-scale.ts). Ordered by (state, id) with no equality on state,
 * the primary key cannot give the order, and (state, id) or (delegator_did,
 * state, id) is used from the cursor on; SQLite chose those indexes either
 * way. The count is a plain COUNT(*)
 * (Prisma's count wraps it in a subquery that costs SQLite 2-4x more), and it
 * runs only when the caller does not already know the total (the first page
 * of a listing; see delegation/page-token.ts).
 */
import type { Delegation } from "../domain/index.js";
import { Prisma, type PrismaClient } from "./generated/sqlite/client.js";
import { DELEGATION_COLUMNS, type DelegationRow, delegationFromRow } from "./rows.js";
import type { ListQuery } from "./store.js";

export interface Listing {
  /** A page of delegations in id order, and how many match in all (or `query.knownTotal`, when given). */
  list(query: ListQuery): Promise<{ items: Delegation[]; total: number }>;
  close(): Promise<void>;
}

const SELECT_COLUMNS = Prisma.raw(DELEGATION_COLUMNS.map((c) => `"${c}"`).join(", "));

/**
 * A raw row: Prisma types integer columns declared BIGINT as bigint and
 * booleans as booleans (SQLite's 0/1 included); `delegationFromRow` reads
 * both through Number() and its boolean helper.
 */
type RawRow = Omit<DelegationRow, "max_commands" | "commands_executed" | "depth" | "create_time" | "update_time" | "expire_time" | "end_time"> & {
  [K in "max_commands" | "commands_executed" | "depth" | "create_time" | "update_time" | "expire_time"]: number | bigint | string;
} & { end_time: number | bigint | string | null };

/** The page's statement (see the comment at the top). */
export function pageQuery(query: ListQuery): Prisma.Sql {
  const did = query.delegatorDid ? Prisma.sql`"delegator_did" = ${query.delegatorDid} AND ` : Prisma.empty;
  return Prisma.sql`SELECT ${SELECT_COLUMNS} FROM "delegations"
    WHERE ${did}("state", "id") > (${query.state}, ${query.afterId ?? ""}) AND "state" <= ${query.state}
    ORDER BY "state", "id" LIMIT ${query.limit}`;
}

/** How many delegations match the filters (no cursor). */
export function countQuery(query: ListQuery): Prisma.Sql {
  const did = query.delegatorDid ? Prisma.sql` AND "delegator_did" = ${query.delegatorDid}` : Prisma.empty;
  return Prisma.sql`SELECT COUNT(*) AS "n" FROM "delegations" WHERE "state" = ${query.state}${did}`;
}

/** A Listing over a Prisma client of either provider (the statements are the same on both). */
export function createPrismaListing(client: PrismaClient): Listing {
  return {
    async list(query) {
      const [rows, total] = await Promise.all([
        client.$queryRaw<RawRow[]>(pageQuery(query)),
        query.knownTotal !== undefined
          ? query.knownTotal
          : client.$queryRaw<{ n: number | bigint }[]>(countQuery(query)).then((r) => Number(r[0]?.n ?? 0)),
      ]);
      return { items: rows.map((r) => delegationFromRow(r as unknown as DelegationRow)), total };
    },
    async close() {
      await client.$disconnect();
    },
  };
}
