/**
 * What the dashboard knows: the delegations it shows and the ceremonies that
 * wait for a decision, built from listings and kept current by Watch events.
 * DOM-free, so its rules are tested in Node (test/web/model.test.ts).
 *
 * A listing is taken right after a checkpoint (the stream is not read
 * meanwhile), and the events after that checkpoint are applied on top; each
 * event carries the delegation (or ceremony) after its change, so applying
 * one the listing already reflects changes nothing that the next one would not.
 */
import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type Ceremony,
  CeremonyState,
  type Delegation,
  type DelegationEvent,
  DelegationEventType,
  DelegationState,
} from "../../src/gen/llmbroker/v1/delegation_pb.js";

/** Which parts of the view a change touched. */
export interface Change {
  delegationId?: string;
  ceremonyId?: string;
}

export class DashboardModel {
  /** By delegation id, oldest first: the listing's order, then arrivals. Ended ones stay, marked. */
  readonly delegations = new Map<string, Delegation>();
  /** Pending ceremonies by id, oldest first. */
  readonly ceremonies = new Map<string, Ceremony>();
  /** The broker's clock minus ours, estimated from the last listing. */
  skewMs = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Replaces the live part by a fresh listing of ACTIVE delegations and
   * PENDING ceremonies. Ended rows stay for the session; a row that was live
   * and is not listed any more ended while the stream was away, and goes.
   */
  load(active: Delegation[], pending: Ceremony[]): void {
    const receivedAt = this.now();
    const ended = [...this.delegations.values()].filter((d) => !isLive(d));
    this.delegations.clear();
    for (const d of ended) this.delegations.set(d.delegationId, d);
    for (const d of active) this.delegations.set(d.delegationId, d);
    this.ceremonies.clear();
    for (const c of pending) if (c.state === CeremonyState.PENDING) this.ceremonies.set(c.ceremonyId, c);
    const sample = active.find((d) => d.expireTime && d.timeRemaining && durationMs(d.timeRemaining) > 0);
    if (sample) this.skewMs = timestampMs(sample.expireTime!) - durationMs(sample.timeRemaining!) - receivedAt;
  }

  /** Takes a delegation as the broker last described it (an event, or an RPC's answer). */
  upsert(d: Delegation): void {
    this.delegations.set(d.delegationId, d);
  }

  /** Applies one Watch event. */
  apply(ev: DelegationEvent): Change {
    const change: Change = {};
    const d = ev.delegation;
    if (d) {
      // Endings and ceremony changes of a delegation never shown are not news for this table.
      if (ev.type === DelegationEventType.CREATED || this.delegations.has(d.delegationId)) {
        this.upsert(d);
        change.delegationId = d.delegationId;
      }
    }
    const c = ev.ceremony;
    if (c) {
      if (ev.type === DelegationEventType.CEREMONY_REQUESTED && c.state === CeremonyState.PENDING) this.ceremonies.set(c.ceremonyId, c);
      else this.ceremonies.delete(c.ceremonyId);
      change.ceremonyId = c.ceremonyId;
    }
    // A delegation that ended takes its pending ceremonies with it (their EXPIRED events follow).
    if (d && !isLive(d)) {
      for (const [id, pc] of this.ceremonies) if (pc.delegationId === d.delegationId) this.ceremonies.delete(id);
    }
    return change;
  }

  /** Removes a ceremony once decided here (its event follows). */
  decided(ceremonyId: string): void {
    this.ceremonies.delete(ceremonyId);
  }

  /** Time left before `t` (a broker timestamp in ms), by our clock corrected for the broker's. */
  leftUntil(brokerMs: number): number {
    return brokerMs - (this.now() + this.skewMs);
  }

  /** Time left of a live delegation; 0 once it ended. */
  timeLeftMs(d: Delegation): number {
    if (!isLive(d) || !d.expireTime) return 0;
    return Math.max(0, this.leftUntil(timestampMs(d.expireTime)));
  }

  /** How many shown delegations are live. */
  get liveCount(): number {
    let n = 0;
    for (const d of this.delegations.values()) if (isLive(d)) n++;
    return n;
  }

  clear(): void {
    this.delegations.clear();
    this.ceremonies.clear();
    this.skewMs = 0;
  }
}

/** ACTIVE (or still REQUESTED): it can be revoked, and its clock runs. */
export function isLive(d: Delegation): boolean {
  return d.state === DelegationState.ACTIVE || d.state === DelegationState.REQUESTED;
}
