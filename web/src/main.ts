/**
 * The dashboard's entry point: sign-in (a dev DID or a bearer token, kept in
 * sessionStorage), then the live view — delegations, pending ceremonies and
 * the event feed — with revoke, approve and deny behind a confirmation dialog.
 * Served by the broker itself (src/server/dashboard.ts), so it calls its own
 * origin and needs no CORS.
 */
import { type BrokerClient, createBrokerClient } from "../../src/client/web.js";
import { AlertRegion } from "./alerts.js";
import { CeremoniesView, type Decision } from "./ceremonies-view.js";
import { DelegationsView } from "./delegations-view.js";
import { ConfirmDialog } from "./dialog.js";
import { byId, setText } from "./dom.js";
import { FeedView } from "./feed-view.js";
import { formatDuration } from "./format.js";
import { LiveSync } from "./live.js";
import { DashboardModel } from "./model.js";
import { type Session, clearSession, describeSession, loadSession, saveSession } from "./session.js";

const alerts = new AlertRegion(byId("alert"), byId("alert-text"), byId<HTMLButtonElement>("alert-dismiss"));
const dialog = new ConfirmDialog();
const model = new DashboardModel();
const delegationsHeading = byId("delegations-title");
const ceremoniesHeading = byId("ceremonies-title");

let client: BrokerClient | undefined;
let live: LiveSync | undefined;

const delegationsView = new DelegationsView(
  byId<HTMLTableSectionElement>("delegations-body"),
  byId("delegations-empty"),
  byId("delegations-count"),
  delegationsHeading,
  (id, button) => confirmRevoke(id, button),
);
const ceremoniesView = new CeremoniesView(byId<HTMLUListElement>("ceremony-list"), byId("ceremonies-empty"), (c, decision, button) =>
  confirmDecision(c.ceremonyId, c.command, decision, button),
);
const feedView = new FeedView(byId<HTMLOListElement>("feed-list"), byId("feed-empty"));
const statusText = byId("status");

function render(): void {
  delegationsView.render(model);
  ceremoniesView.render(model);
}

function showStatus(state: "live" | "connecting" | "reconnecting" | "stopped", retryInMs?: number): void {
  const text = {
    live: "Live",
    connecting: "Connecting…",
    reconnecting: retryInMs === undefined ? "Reconnecting…" : `Reconnecting in ${formatDuration(retryInMs + 999)}…`,
    stopped: "Not updating (see the error above)",
  }[state];
  setText(statusText, text);
  statusText.dataset.state = state;
}

function confirmRevoke(delegationId: string, button: HTMLButtonElement): void {
  const d = model.delegations.get(delegationId);
  if (!d || !client) return;
  const c = client;
  dialog.open({
    title: "Revoke delegation?",
    body: `${d.agentType} (${d.delegationId}) loses its authority now, with every delegation made from it. This cannot be undone.`,
    confirmLabel: "Revoke",
    reasonLabel: "Reason",
    reasonHint: "Optional. Kept as the delegation's end detail and in the audit log.",
    returnFocus: button,
    fallbackFocus: delegationsHeading,
    run: async (reason) => {
      const res = await c.revokeDelegation({ delegationId, reason, requestId: crypto.randomUUID() });
      if (res.delegation) model.upsert(res.delegation);
      render();
    },
  });
}

function confirmDecision(ceremonyId: string, command: string, decision: Decision, button: HTMLButtonElement): void {
  if (!client) return;
  const c = client;
  const approve = decision === "approve";
  dialog.open({
    title: approve ? "Approve this command?" : "Deny this command?",
    body: approve ? `The agent may run “${command}” once, before the approval expires.` : `The agent may not run “${command}”.`,
    confirmLabel: approve ? "Approve" : "Deny",
    reasonLabel: "Reason",
    reasonHint: "Optional. Kept with the ceremony and in the audit log.",
    returnFocus: button,
    fallbackFocus: ceremoniesHeading,
    run: async (reason) => {
      if (approve) await c.approveCeremony({ ceremonyId, reason });
      else await c.denyCeremony({ ceremonyId, reason });
      model.decided(ceremonyId);
      render();
    },
  });
}

function clientFor(session: Session): BrokerClient {
  return createBrokerClient({ baseUrl: location.origin, ...(session.mode === "did" ? { did: session.did } : { token: session.token }) });
}

/** Switches to the dashboard for `session`, and starts following the broker. */
function enter(session: Session): void {
  client = clientFor(session);
  setText(byId("who-text"), describeSession(session));
  byId("who").hidden = false;
  byId("signin").hidden = true;
  byId("app").hidden = false;
  live = new LiveSync(client, model, {
    changed: render,
    event: (ev, revision) => feedView.add(ev, revision),
    status: showStatus,
    failed: (doing, err) => alerts.show(doing, err),
  });
  live.start();
}

function signOut(): void {
  live?.stop();
  live = undefined;
  client = undefined;
  clearSession();
  model.clear();
  delegationsView.clear();
  ceremoniesView.clear();
  feedView.clear();
  alerts.clear();
  byId("who").hidden = true;
  byId("app").hidden = true;
  byId("signin").hidden = false;
  byId<HTMLInputElement>("token").value = "";
  byId(currentMode() === "did" ? "did" : "token").focus();
}

function currentMode(): "did" | "token" {
  return byId<HTMLInputElement>("mode-token").checked ? "token" : "did";
}

function showModeFields(): void {
  const mode = currentMode();
  byId("did-field").hidden = mode !== "did";
  byId("token-field").hidden = mode !== "token";
}

async function signIn(e: SubmitEvent): Promise<void> {
  // Never a real submission: the token must not travel in a URL or a form post.
  e.preventDefault();
  alerts.clear();
  const mode = currentMode();
  const value = byId<HTMLInputElement>(mode).value.trim();
  if (value === "") {
    alerts.show("Signing in", mode === "did" ? "enter your delegator DID" : "paste an access token");
    byId(mode).focus();
    return;
  }
  const session: Session = mode === "did" ? { mode, did: value } : { mode, token: value };
  const submit = byId<HTMLButtonElement>("signin-submit");
  submit.disabled = true;
  try {
    // One cheap call proves the identity before anything is kept.
    await clientFor(session).listAgents({ pageSize: 1 });
  } catch (err) {
    alerts.show("Signing in", err);
    byId(mode).focus();
    return;
  } finally {
    submit.disabled = false;
  }
  saveSession(session);
  byId<HTMLInputElement>("token").value = "";
  enter(session);
  delegationsHeading.focus();
}

byId<HTMLFormElement>("signin-form").addEventListener("submit", (e) => void signIn(e));
for (const radio of document.querySelectorAll<HTMLInputElement>('input[name="mode"]')) radio.addEventListener("change", showModeFields);
byId("signout").addEventListener("click", signOut);
byId("refresh").addEventListener("click", () => {
  alerts.clear();
  live?.start();
});
setInterval(() => {
  delegationsView.tick(model);
  ceremoniesView.tick(model);
}, 1000);

const saved = loadSession();
if (saved) {
  byId<HTMLInputElement>(saved.mode === "did" ? "mode-did" : "mode-token").checked = true;
  if (saved.mode === "did") byId<HTMLInputElement>("did").value = saved.did;
  showModeFields();
  enter(saved);
} else {
  showModeFields();
}
