/** How the dashboard writes times, durations, states and event kinds. DOM-free. */
import { CeremonyState, DelegationEventType, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";

/** "1h 05m", "4m 09s", "12s"; "0s" once nothing is left. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  if (h > 0) return `${h}h ${two(m)}m`;
  if (m > 0) return `${m}m ${two(sec)}s`;
  return `${sec}s`;
}

/** A local wall-clock time, "14:03:09". */
export function formatClock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/** "ACTIVE", "REVOKED", … (the proto names, as the API and the CLI print them). */
export function stateName(state: DelegationState): string {
  return DelegationState[state] ?? "UNSPECIFIED";
}

export function ceremonyStateName(state: CeremonyState): string {
  return CeremonyState[state] ?? "UNSPECIFIED";
}

/** "CREATED", "CEREMONY_REQUESTED", … */
export function eventName(type: DelegationEventType): string {
  return DelegationEventType[type] ?? "UNSPECIFIED";
}

/** "Ceremony requested" for CEREMONY_REQUESTED. */
export function humanize(name: string): string {
  const words = name.toLowerCase().replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
