/**
 * The one confirmation dialog (a modal <dialog>): a title, what will happen,
 * a reason, Cancel and the action. showModal() makes the rest of the page
 * inert and Escape cancel; focus goes to the reason field on open and back to
 * the button that opened it on close. An error keeps the dialog open, in its
 * own alert, so the action can be tried again or cancelled.
 */
import { describeError } from "./alerts.js";
import { byId, setText } from "./dom.js";

export interface ConfirmRequest {
  title: string;
  body: string;
  confirmLabel: string;
  reasonLabel: string;
  reasonHint: string;
  /** Runs the action with the reason typed (trimmed, may be empty); a throw is shown in the dialog. */
  run: (reason: string) => Promise<void>;
  /** Where focus returns; by default, the element focused when the dialog opened. */
  returnFocus?: HTMLElement;
  /** Where focus goes if returnFocus has left the page (its row changed meanwhile). */
  fallbackFocus: HTMLElement;
}

export class ConfirmDialog {
  private readonly dialog = byId<HTMLDialogElement>("confirm");
  private readonly form = byId<HTMLFormElement>("confirm-form");
  private readonly title = byId("confirm-title");
  private readonly body = byId("confirm-body");
  private readonly reasonLabel = byId("confirm-reason-label");
  private readonly reason = byId<HTMLInputElement>("confirm-reason");
  private readonly hint = byId("confirm-hint");
  private readonly error = byId("confirm-error");
  private readonly ok = byId<HTMLButtonElement>("confirm-ok");
  private readonly cancel = byId<HTMLButtonElement>("confirm-cancel");
  private current: ConfirmRequest | undefined;
  private busy = false;

  constructor() {
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.confirm();
    });
    this.cancel.addEventListener("click", () => this.close());
    // Escape: the browser cancels the dialog; not while the action runs.
    this.dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      if (!this.busy) this.close();
    });
  }

  open(request: ConfirmRequest): void {
    const opener = document.activeElement;
    this.current = { ...request, ...(request.returnFocus ? {} : opener instanceof HTMLElement ? { returnFocus: opener } : {}) };
    setText(this.title, request.title);
    setText(this.body, request.body);
    setText(this.reasonLabel, request.reasonLabel);
    setText(this.hint, request.reasonHint);
    setText(this.ok, request.confirmLabel);
    this.reason.value = "";
    this.setError("");
    this.setBusy(false);
    this.dialog.showModal();
    this.reason.focus();
  }

  get isOpen(): boolean {
    return this.dialog.open;
  }

  private async confirm(): Promise<void> {
    const request = this.current;
    if (!request || this.busy) return;
    this.setBusy(true);
    this.setError("");
    try {
      await request.run(this.reason.value.trim());
      this.close();
    } catch (err) {
      this.setBusy(false);
      this.setError(describeError(err));
      this.reason.focus();
    }
  }

  private close(): void {
    const request = this.current;
    this.current = undefined;
    this.setBusy(false);
    if (this.dialog.open) this.dialog.close();
    if (!request) return;
    const target = request.returnFocus?.isConnected ? request.returnFocus : request.fallbackFocus;
    target.focus();
  }

  private setBusy(busy: boolean): void {
    this.busy = busy;
    this.ok.disabled = busy;
    this.cancel.disabled = busy;
    this.reason.readOnly = busy;
    this.form.setAttribute("aria-busy", String(busy));
  }

  private setError(text: string): void {
    setText(this.error, text);
    this.error.hidden = text === "";
  }
}
