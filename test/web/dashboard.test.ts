/**
 * The dashboard end to end in headless Chromium (Debian's /usr/bin/chromium
 * driven by playwright-core), against a real broker: signing in as a DID
 * (a bad one shows the broker's error), a delegation created through gRPC
 * appearing with its time left counting down, a revoke through gRPC arriving
 * live, a revoke from the page by keyboard through the confirmation dialog
 * (seen through gRPC with the reason typed), ceremonies approved and denied
 * from the page (the approval then lets the agent's command through), the
 * watch resuming after the broker restarts, the phone layout without
 * horizontal scroll, a bearer-token sign-in against AUTH_MODE=jwt, and no
 * CSP violation or script error on the way. Screenshots go to
 * test-output/dashboard/.
 *
 * Without Chromium the suite is skipped, saying so; in CI (CI=true) a missing
 * Chromium fails it instead, since CI installs it.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { type Browser, type BrowserContext, type Page, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CeremonyState, CommandDecision, DelegationState } from "../../src/gen/llmbroker/v1/delegation_pb.js";
import { JwksFake } from "../fakes/jwks-fake.js";
import { ALICE, type TestBroker, as, startTestBroker } from "../helpers/broker.js";

// The page's globals, as the functions handed to page.evaluate see them there
// (this file is compiled with the repository's Node settings, without the DOM lib).
declare const document: {
  activeElement: { id: string } | null;
  documentElement: { scrollWidth: number; clientWidth: number };
  addEventListener(type: "securitypolicyviolation", listener: (e: { violatedDirective: string; blockedURI: string }) => void): void;
};
declare const sessionStorage: { getItem(key: string): string | null; readonly length: number };
declare const window: { marker?: number };
declare function getComputedStyle(element: unknown): { display: string };

const CHROMIUM = "/usr/bin/chromium";
const HAS_CHROMIUM = existsSync(CHROMIUM);
const IN_CI = process.env.CI === "true";
const SHOTS = new URL("../../test-output/dashboard/", import.meta.url);
const ROOT = new URL("../../", import.meta.url);

if (!HAS_CHROMIUM) {
  console.warn(
    IN_CI
      ? `dashboard e2e: ${CHROMIUM} is missing in CI (CI=true): failing, CI must install Chromium`
      : `dashboard e2e: SKIPPED, ${CHROMIUM} is missing (install Debian's chromium to run the browser tests)`,
  );
}

describe.runIf(!HAS_CHROMIUM && IN_CI)("dashboard e2e in CI", () => {
  it("needs Chromium at /usr/bin/chromium", () => {
    expect.fail(`${CHROMIUM} is missing; CI installs Debian's chromium for the dashboard tests`);
  });
});

/** Chromium as the task asks: headless, no sandbox (containers), nothing phoning home; a fresh profile per launch. */
function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A port free right now, so the broker can come back on the same one after a restart (the page's origin). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Problems the page reports: script errors, CSP violations, console errors other than failed requests. */
interface PageProblems {
  errors: string[];
}

async function watchProblems(context: BrowserContext, page: Page): Promise<PageProblems> {
  const problems: PageProblems = { errors: [] };
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on("pageerror", (err) => problems.errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    // A refused RPC is an HTTP 4xx, which Chromium logs as a failed resource: expected where a test provokes one.
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) problems.errors.push(`console: ${msg.text()}`);
  });
  return problems;
}

const shot = (page: Page, name: string, fullPage = true) => page.screenshot({ path: new URL(name, SHOTS).pathname, fullPage });
const row = (page: Page, id: string) => page.locator(`tr[data-delegation-id="${id}"]`);
const stateOf = (page: Page, id: string) => row(page, id).locator('[data-field="state"]').textContent();

describe.skipIf(!HAS_CHROMIUM)("dashboard in headless Chromium", () => {
  let t: TestBroker;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: PageProblems;
  let base: string;

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    execFileSync(process.execPath, ["scripts/build-web.mjs"], { cwd: ROOT, stdio: "pipe" });
    const webPort = await freePort();
    t = await startTestBroker({ env: { LLM_BROKER_WEB_PORT: String(webPort), CEREMONY_TTL_SECONDS: "600", WATCH_CHECKPOINT_SECONDS: "2" } });
    base = `http://127.0.0.1:${t.broker.webPort}`;
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(10_000);
    page = await context.newPage();
    problems = await watchProblems(context, page);
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
  });

  const create = async (scope: Record<string, unknown> = { maxCommands: 10, capabilityCeiling: "CAP_READ" }) =>
    (await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice", agentModel: "claude-test", scope }, as(ALICE))).delegation!;

  it("shows the broker's error for a bad DID, then signs in as a DID (kept in sessionStorage, not in the URL)", async () => {
    const response = await page.goto(`${base}/`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()["content-security-policy"]).toContain("default-src 'self'");
    expect(await page.title()).toBe("LLM Principal Broker");
    await shot(page, "signin.png");

    await page.getByRole("textbox", { name: "Delegator DID" }).fill("not-a-did");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert").filter({ hasText: "Signing in" });
    await alert.waitFor();
    expect(await alert.textContent()).toMatch(/x-delegator-did is not a DID.*UNAUTHENTICATED/s);

    await page.getByRole("textbox", { name: "Delegator DID" }).fill(ALICE);
    await page.getByRole("textbox", { name: "Delegator DID" }).press("Enter");
    await page.getByRole("status").filter({ hasText: "Live" }).waitFor();
    expect(await page.locator("#alert").isHidden()).toBe(true);
    expect(await page.locator("#who-text").textContent()).toBe(`Signed in as ${ALICE}`);
    expect(page.url()).toBe(`${base}/`);
    expect(await page.evaluate(() => sessionStorage.getItem("llm-broker.session"))).toContain(ALICE);
    // Focus moved to the dashboard.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("delegations-title");
    // A marker that survives only without a reload.
    await page.evaluate(() => (window.marker = 42));
  });

  it("shows a delegation created through gRPC, its time left counting down", async () => {
    const d = await create();
    await row(page, d.delegationId).waitFor();
    const cells = row(page, d.delegationId);
    expect(await cells.locator("th").textContent()).toContain("claude-code");
    expect(await cells.locator("th").textContent()).toContain(d.delegationId);
    expect(await cells.locator('td[data-label="Ceiling"]').textContent()).toBe("CAP_READ");
    expect(await stateOf(page, d.delegationId)).toBe("Active");
    expect(await cells.locator('[data-field="commands-left"]').textContent()).toBe("10 of 10");
    const left = async () => (await cells.locator('[data-field="time-left"]').textContent()) ?? "";
    const first = await left();
    expect(first).toMatch(/^(59m|1h 00m|60m)/);
    await expect.poll(left, { timeout: 5000, interval: 200 }).not.toBe(first);
    // The feed told it too.
    await page.locator(`#feed-list li[data-event="CREATED"]`).filter({ hasText: d.delegationId }).waitFor();
  });

  it("shows a revoke done through gRPC live, without a reload", async () => {
    const d = await create();
    await row(page, d.delegationId).waitFor();
    await t.grpc.unary("revokeDelegation", { delegationId: d.delegationId, reason: "revoked from the shell" }, as(ALICE));
    await expect.poll(() => stateOf(page, d.delegationId), { timeout: 5000 }).toBe("Revoked");
    expect(await row(page, d.delegationId).locator("td.action-cell").textContent()).toBe("manual_revocation: revoked from the shell");
    expect(await row(page, d.delegationId).getByRole("button").count()).toBe(0);
    await page.locator(`#feed-list li[data-event="REVOKED"]`).filter({ hasText: d.delegationId }).waitFor();
    expect(await page.evaluate(() => window.marker)).toBe(42);
    await shot(page, "laptop.png");
  });

  it("revokes from the page with the keyboard, through the confirmation dialog; gRPC sees it with the reason typed", async () => {
    const d = await create();
    const revoke = row(page, d.delegationId).getByRole("button", { name: `Revoke claude-code ${d.delegationId}` });
    await revoke.waitFor();
    await revoke.focus();
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "Revoke delegation?" });
    await dialog.waitFor();
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("confirm-reason");
    // Escape cancels and gives focus back to the Revoke button; nothing happened.
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    expect(await revoke.evaluate((b) => b === document.activeElement)).toBe(true);
    expect((await t.grpc.unary("getDelegation", { delegationId: d.delegationId }, as(ALICE))).delegation!.state).toBe(DelegationState.ACTIVE);

    await page.keyboard.press("Enter");
    await dialog.waitFor();
    await page.keyboard.type("agent went off script");
    await shot(page, "revoke-dialog.png");
    // Reason -> Cancel -> Revoke, by Tab; Enter confirms.
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("confirm-cancel");
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("confirm-ok");
    await page.keyboard.press("Enter");
    await dialog.waitFor({ state: "hidden" });
    await expect.poll(() => stateOf(page, d.delegationId), { timeout: 5000 }).toBe("Revoked");
    // Its button is gone: focus went to the table's heading, not to the void.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("delegations-title");

    const got = (await t.grpc.unary("getDelegation", { delegationId: d.delegationId }, as(ALICE))).delegation!;
    expect(got).toMatchObject({ state: DelegationState.REVOKED, endReason: "manual_revocation", endDetail: "agent went off script" });
  });

  it("approves a pending ceremony from the page; the agent's command is then allowed with it", async () => {
    const d = await create({ ceremonyRequiredFor: ["deploy"], maxCommands: 5 });
    const asked = await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "deploy prod --now" }, as(ALICE));
    expect(asked.decision).toBe(CommandDecision.CEREMONY_REQUIRED);
    const card = page.locator(`li[data-ceremony-id="${asked.ceremonyId}"]`);
    await card.waitFor();
    expect(await card.locator(".command").textContent()).toBe("deploy prod --now");
    expect(await card.textContent()).toContain(d.delegationId);
    await shot(page, "ceremony.png");

    await card.getByRole("button", { name: "Approve" }).click();
    const dialog = page.getByRole("dialog", { name: "Approve this command?" });
    await dialog.waitFor();
    await page.getByLabel("Reason").fill("release window");
    await dialog.getByRole("button", { name: "Approve" }).click();
    await dialog.waitFor({ state: "hidden" });
    await card.waitFor({ state: "detached" });

    const c = (await t.grpc.unary("getCeremony", { ceremonyId: asked.ceremonyId }, as(ALICE))).ceremony!;
    expect(c).toMatchObject({ state: CeremonyState.APPROVED, decidedBy: ALICE, reason: "release window" });
    const allow = await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "deploy prod --now", ceremonyId: asked.ceremonyId }, as(d.agentDid));
    expect(allow).toMatchObject({ decision: CommandDecision.ALLOW, ceremonyId: asked.ceremonyId, commandsRemaining: 4 });
    // CEREMONY_USED carries the delegation with its new count.
    await expect.poll(() => row(page, d.delegationId).locator('[data-field="commands-left"]').textContent(), { timeout: 5000 }).toBe("4 of 5");
  });

  it("after a reload lists the ceremonies that were already pending (same tab, same session), and denies one", async () => {
    const d = await create({ ceremonyRequiredFor: ["drop"], maxCommands: 5 });
    const asked = await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "psql -c 'DROP TABLE t'" }, as(ALICE));
    await page.reload();
    await page.getByRole("status").filter({ hasText: "Live" }).waitFor();
    const card = page.locator(`li[data-ceremony-id="${asked.ceremonyId}"]`);
    await card.waitFor();
    await card.getByRole("button", { name: "Deny" }).click();
    await page.getByLabel("Reason").fill("not on a Friday");
    await page.getByRole("dialog").getByRole("button", { name: "Deny" }).click();
    await card.waitFor({ state: "detached" });
    const c = (await t.grpc.unary("getCeremony", { ceremonyId: asked.ceremonyId }, as(ALICE))).ceremony!;
    expect(c).toMatchObject({ state: CeremonyState.DENIED, reason: "not on a Friday" });
  });

  it("keeps following after the broker restarts: the watch resumes and new delegations appear without a reload", async () => {
    await page.evaluate(() => (window.marker = 43));
    await t.restart();
    const d = await create();
    await row(page, d.delegationId).waitFor({ timeout: 15_000 });
    await page.getByRole("status").filter({ hasText: "Live" }).waitFor();
    expect(await page.evaluate(() => window.marker)).toBe(43);
  });

  it("is readable on a phone (390x844) without horizontal scrolling", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const d = await create({ ceremonyRequiredFor: ["destroy"], maxCommands: 3 });
    await t.grpc.unary("authorizeCommand", { delegationId: d.delegationId, command: "terraform destroy -auto-approve -var-file=production.tfvars" }, as(ALICE));
    await row(page, d.delegationId).waitFor();
    await page.locator("li[data-ceremony-id]").first().waitFor();
    const widths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
    expect(widths.scroll).toBeLessThanOrEqual(widths.client);
    // Each row is a card with its cells labelled.
    expect(await row(page, d.delegationId).evaluate((tr) => getComputedStyle(tr).display)).toBe("block");
    await shot(page, "phone.png");
    await row(page, d.delegationId).getByRole("button", { name: /^Revoke/ }).click();
    await page.getByRole("dialog").waitFor();
    const dialogWidths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
    expect(dialogWidths.scroll).toBeLessThanOrEqual(dialogWidths.client);
    await shot(page, "phone-dialog.png", false); // a modal: what the viewport shows
    await page.keyboard.press("Escape");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it("signs out: the session leaves sessionStorage", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    expect(await page.locator("#delegations-body tr").count()).toBe(0);
  });

  it("had no script error and no CSP violation", () => {
    expect(problems.errors).toEqual([]);
  });
});

describe.skipIf(!HAS_CHROMIUM)("dashboard with a bearer token (AUTH_MODE=jwt) in headless Chromium", () => {
  let issuer: JwksFake;
  let t: TestBroker;
  let browser: Browser;

  beforeAll(async () => {
    execFileSync(process.execPath, ["scripts/build-web.mjs"], { cwd: ROOT, stdio: "pipe" });
    issuer = await JwksFake.start();
    t = await startTestBroker({ env: { ...issuer.env(), ALLOW_DEV_DRIVERS: "true" } });
    browser = await launch();
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
    await issuer?.close();
  });

  it("signs in with the token, sends it only as Authorization, and shows the token's delegator's delegations", async () => {
    const token = await issuer.token({ claims: { did: ALICE, azp: "dashboard" } });
    const bearer = { authorization: `Bearer ${token}` };
    const d = (await t.grpc.unary("createDelegation", { delegatorAcId: "ac-alice" }, bearer)).delegation!;
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(10_000);
    const page = await context.newPage();
    const problems = await watchProblems(context, page);
    const rpcs: { url: string; authorization: string | undefined }[] = [];
    page.on("request", (r) => {
      if (r.url().includes("/llmbroker.v1.DelegationService/")) rpcs.push({ url: r.url(), authorization: r.headers().authorization });
    });
    await page.goto(`http://127.0.0.1:${t.broker.webPort}/`);

    await page.getByRole("radio", { name: /access token/ }).check();
    await page.getByRole("textbox", { name: "Access token" }).fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await row(page, d.delegationId).waitFor();
    expect(await page.locator("#who-text").textContent()).toBe("Signed in with a bearer token");
    expect(await page.locator("#token").inputValue()).toBe(""); // the field (hidden now) keeps no copy
    expect(rpcs.length).toBeGreaterThan(0);
    for (const r of rpcs) {
      expect(r.authorization).toBe(`Bearer ${token}`);
      expect(r.url).not.toContain(token);
    }
    expect(page.url()).not.toContain(token);
    expect(await page.evaluate(() => sessionStorage.getItem("llm-broker.session"))).toContain(token);

    // A revoke through gRPC arrives on the token's watch too.
    await t.grpc.unary("revokeDelegation", { delegationId: d.delegationId }, bearer);
    await expect.poll(() => stateOf(page, d.delegationId), { timeout: 5000 }).toBe("Revoked");
    expect(problems.errors).toEqual([]);
    await context.close();
  });

  it("shows UNAUTHENTICATED with the broker's message for a token it does not accept", async () => {
    const context = await browser.newContext();
    context.setDefaultTimeout(10_000);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${t.broker.webPort}/`);
    await page.getByRole("radio", { name: /access token/ }).check();
    await page.getByRole("textbox", { name: "Access token" }).fill("not.a.jwt");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert").filter({ hasText: "Signing in" });
    await alert.waitFor();
    expect(await alert.textContent()).toContain("UNAUTHENTICATED");
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await context.close();
  });
});
