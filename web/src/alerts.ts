/** The page's alert region (role=alert): the broker's own message, its code and reason. */
import { Code, ConnectError, errorDetailOf } from "../../src/client/web.js";
import { setText } from "./dom.js";

/** "delegation del_… is not active (FAILED_PRECONDITION, DELEGATION_NOT_ACTIVE)". */
export function describeError(err: unknown): string {
  const ce = ConnectError.from(err);
  const code = (Code[ce.code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  const reason = errorDetailOf(ce)?.reason;
  return `${ce.rawMessage || "the broker gave no message"} (${code}${reason ? `, ${reason}` : ""})`;
}

export class AlertRegion {
  constructor(
    private readonly region: HTMLElement,
    private readonly text: HTMLElement,
    dismiss: HTMLButtonElement,
  ) {
    dismiss.addEventListener("click", () => this.clear());
  }

  /** Shows `what` (an error, or a sentence), prefixed with what was being done. */
  show(doing: string, what: unknown): void {
    const message = typeof what === "string" ? what : describeError(what);
    setText(this.text, `${doing}: ${message}`);
    this.region.hidden = false;
  }

  clear(): void {
    setText(this.text, "");
    this.region.hidden = true;
  }
}
