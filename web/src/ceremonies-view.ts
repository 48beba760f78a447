/**
 * Pending ceremonies: the command an agent asked to run, which delegation
 * and rule, how long the approval may wait, and Approve / Deny. Keyed by
 * ceremony id like the table, so focus stays put while others arrive.
 */
import { type Ceremony, timestampMs } from "../../src/client/web.js";
import { el, keepingFocus, setText } from "./dom.js";
import { formatDuration } from "./format.js";
import type { DashboardModel } from "./model.js";

interface Item {
  li: HTMLLIElement;
  expires: HTMLElement;
  agent: HTMLElement;
}

export type Decision = "approve" | "deny";

export class CeremoniesView {
  private readonly items = new Map<string, Item>();

  constructor(
    private readonly list: HTMLUListElement,
    private readonly empty: HTMLElement,
    private readonly onDecide: (c: Ceremony, decision: Decision, button: HTMLButtonElement) => void,
  ) {}

  render(model: DashboardModel): void {
    for (const [id, item] of this.items) {
      if (!model.ceremonies.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }
    keepingFocus(() => {
      let i = 0;
      for (const c of model.ceremonies.values()) {
        const item = this.items.get(c.ceremonyId) ?? this.create(c);
        const d = model.delegations.get(c.delegationId);
        setText(item.agent, d ? `${d.agentType} · ${c.delegationId}` : c.delegationId);
        setText(item.expires, expiresText(c, model));
        if (this.list.children[i] !== item.li) this.list.insertBefore(item.li, this.list.children[i] ?? null);
        i++;
      }
    });
    this.empty.hidden = model.ceremonies.size > 0;
  }

  tick(model: DashboardModel): void {
    for (const c of model.ceremonies.values()) {
      const item = this.items.get(c.ceremonyId);
      if (item) setText(item.expires, expiresText(c, model));
    }
  }

  clear(): void {
    this.items.clear();
    this.list.replaceChildren();
    this.empty.hidden = false;
  }

  private create(c: Ceremony): Item {
    const titleId = `ceremony-${c.ceremonyId}`;
    const agent = el("span");
    const expires = el("span", { className: "num" });
    const approve = el("button", { className: "primary", text: "Approve", attrs: { type: "button", "aria-describedby": titleId } });
    const deny = el("button", { text: "Deny", attrs: { type: "button", "aria-describedby": titleId } });
    approve.addEventListener("click", () => this.onDecide(c, "approve", approve));
    deny.addEventListener("click", () => this.onDecide(c, "deny", deny));
    const li = el(
      "li",
      { className: "card", attrs: { "data-ceremony-id": c.ceremonyId, "aria-labelledby": titleId } },
      el("code", { className: "command", text: c.command, attrs: { id: titleId } }),
      el(
        "dl",
        { className: "facts" },
        el("dt", { text: "Delegation" }),
        el("dd", {}, agent),
        el("dt", { text: "Rule" }),
        el("dd", { text: c.matchedRule }),
        el("dt", { text: "Decide within" }),
        el("dd", {}, expires),
      ),
      el("div", { className: "actions" }, approve, deny),
    );
    const item = { li, expires, agent };
    this.items.set(c.ceremonyId, item);
    return item;
  }
}

function expiresText(c: Ceremony, model: DashboardModel): string {
  return c.expireTime ? formatDuration(model.leftUntil(timestampMs(c.expireTime))) : "—";
}
