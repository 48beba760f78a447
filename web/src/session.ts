/**
 * The signed-in identity, kept in this tab's sessionStorage (gone when the tab
 * closes; never in the URL, never in localStorage or a cookie).
 */
export type Session = { mode: "did"; did: string } | { mode: "token"; token: string };

const KEY = "llm-broker.session";

export function loadSession(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (raw === null) return undefined;
    const s = JSON.parse(raw) as Partial<{ mode: string; did: string; token: string }>;
    if (s.mode === "did" && typeof s.did === "string" && s.did !== "") return { mode: "did", did: s.did };
    if (s.mode === "token" && typeof s.token === "string" && s.token !== "") return { mode: "token", token: s.token };
  } catch {
    // Storage disabled or a value we did not write: signed out.
  }
  return undefined;
}

export function saveSession(s: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}

/** What the header says about who is signed in. */
export function describeSession(s: Session): string {
  return s.mode === "did" ? `Signed in as ${s.did}` : "Signed in with a bearer token";
}
