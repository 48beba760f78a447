/**
 * The delegations table: one row per delegation, keyed by id and updated in
 * place (a row never re-renders under the keyboard focus), with agent,
 * ceiling, state, time left (counting down), commands left and Revoke.
 * On narrow screens the CSS lays each row out as a card, labelled by data-label.
 */
import type { Delegation } from "../../src/client/web.js";
import { el, keepingFocus, setText } from "./dom.js";
import { formatDuration, humanize, stateName } from "./format.js";
import { type DashboardModel, isLive } from "./model.js";

interface Row {
  tr: HTMLTableRowElement;
  agent: HTMLElement;
  model: HTMLElement;
  id: HTMLElement;
  ceiling: HTMLElement;
  state: HTMLElement;
  timeLeft: HTMLElement;
  commandsLeft: HTMLElement;
  action: HTMLElement;
  revoke: HTMLButtonElement | undefined;
}

export class DelegationsView {
  private readonly rows = new Map<string, Row>();

  constructor(
    private readonly tbody: HTMLTableSectionElement,
    private readonly empty: HTMLElement,
    private readonly count: HTMLElement,
    /** Where focus goes when the focused Revoke button disappears (its delegation ended). */
    private readonly heading: HTMLElement,
    private readonly onRevoke: (delegationId: string, button: HTMLButtonElement) => void,
  ) {}

  /** Brings the table in line with the model: rows added, updated, removed, in the model's order. */
  render(model: DashboardModel): void {
    for (const [id, row] of this.rows) {
      if (!model.delegations.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    keepingFocus(() => {
      let i = 0;
      for (const d of model.delegations.values()) {
        const row = this.rows.get(d.delegationId) ?? this.create(d);
        this.fill(row, d, model);
        // Move only what is out of place: a new row goes to the end, nothing else moves.
        if (this.tbody.children[i] !== row.tr) this.tbody.insertBefore(row.tr, this.tbody.children[i] ?? null);
        i++;
      }
    });
    this.empty.hidden = model.delegations.size > 0;
    const live = model.liveCount;
    setText(this.count, `${live} active`);
  }

  /** Updates the time-left cells only (every second). */
  tick(model: DashboardModel): void {
    for (const d of model.delegations.values()) {
      const row = this.rows.get(d.delegationId);
      if (row) setText(row.timeLeft, timeLeftText(d, model));
    }
  }

  clear(): void {
    this.rows.clear();
    this.tbody.replaceChildren();
    this.empty.hidden = false;
    setText(this.count, "");
  }

  private create(d: Delegation): Row {
    const cell = (label: string, ...children: Node[]) => el("td", { attrs: { "data-label": label } }, ...children);
    const agent = el("span", { className: "agent-type" });
    const model = el("span", { className: "agent-model" });
    const id = el("code", { className: "id" });
    const ceiling = el("span");
    const state = el("span", { className: "badge" });
    const timeLeft = el("span", { className: "num" });
    const commandsLeft = el("span", { className: "num" });
    const action = el("td", { className: "action-cell", attrs: { "data-label": "Action" } });
    const tr = el(
      "tr",
      { attrs: { "data-delegation-id": d.delegationId } },
      el("th", { attrs: { scope: "row", "data-label": "Agent" } }, agent, model, id),
      cell("Ceiling", ceiling),
      cell("State", state),
      cell("Time left", timeLeft),
      cell("Commands left", commandsLeft),
      action,
    );
    state.dataset.field = "state";
    timeLeft.dataset.field = "time-left";
    commandsLeft.dataset.field = "commands-left";
    const row: Row = { tr, agent, model, id, ceiling, state, timeLeft, commandsLeft, action, revoke: undefined };
    this.rows.set(d.delegationId, row);
    return row;
  }

  private fill(row: Row, d: Delegation, model: DashboardModel): void {
    const live = isLive(d);
    setText(row.agent, d.agentType);
    setText(row.model, d.agentModel);
    row.model.hidden = d.agentModel === "";
    setText(row.id, d.delegationId);
    setText(row.ceiling, d.capabilityCeiling);
    const state = stateName(d.state);
    setText(row.state, humanize(state));
    row.state.dataset.state = state;
    row.tr.classList.toggle("ended", !live);
    setText(row.timeLeft, timeLeftText(d, model));
    setText(row.commandsLeft, `${d.commandsRemaining} of ${d.maxCommands}`);
    if (live && !row.revoke) {
      const button = el("button", { className: "danger", text: "Revoke", attrs: { type: "button", "aria-label": `Revoke ${d.agentType} ${d.delegationId}` } });
      button.addEventListener("click", () => this.onRevoke(d.delegationId, button));
      row.revoke = button;
      row.action.replaceChildren(button);
    } else if (!live) {
      const hadFocus = row.revoke !== undefined && row.revoke === document.activeElement;
      row.revoke = undefined;
      const why = [d.endReason, d.endDetail].filter((s) => s !== "").join(": ");
      row.action.replaceChildren(el("span", { className: "end-reason", text: why || "ended" }));
      if (hadFocus) this.heading.focus();
    }
  }
}

function timeLeftText(d: Delegation, model: DashboardModel): string {
  return isLive(d) ? formatDuration(model.timeLeftMs(d)) : "—";
}
