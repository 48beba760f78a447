/**
 * The live event feed: newest first, at most 100 entries, in a role=log
 * region (aria-live polite), so screen readers announce each arrival once.
 */
import { type DelegationEvent, timestampMs } from "../../src/client/web.js";
import { el } from "./dom.js";
import { eventName, formatClock, humanize } from "./format.js";

const MAX_ENTRIES = 100;

export class FeedView {
  constructor(
    private readonly list: HTMLOListElement,
    private readonly empty: HTMLElement,
  ) {}

  add(ev: DelegationEvent, revision: bigint): void {
    const name = eventName(ev.type);
    const d = ev.delegation;
    const at = ev.eventTime ? timestampMs(ev.eventTime) : Date.now();
    const what = ev.ceremony ? `“${ev.ceremony.command}”` : "";
    const parts = [d ? `${d.agentType} ${d.delegationId}` : "", what, ev.reason && ev.reason !== "created" ? ev.reason : "", d?.endDetail ? `“${d.endDetail}”` : ""];
    const li = el(
      "li",
      { attrs: { "data-event": name, "data-revision": revision.toString() } },
      el("time", { text: formatClock(at), attrs: { datetime: new Date(at).toISOString() } }),
      el("span", { className: "badge", text: humanize(name), attrs: { "data-event": name } }),
      el("span", { className: "detail", text: parts.filter((p) => p !== "").join(" · ") }),
      ...(ev.actor ? [el("span", { className: "actor", text: `by ${ev.actor}` })] : []),
    );
    this.list.prepend(li);
    while (this.list.children.length > MAX_ENTRIES) this.list.lastElementChild?.remove();
    this.empty.hidden = true;
  }

  clear(): void {
    this.list.replaceChildren();
    this.empty.hidden = false;
  }
}
