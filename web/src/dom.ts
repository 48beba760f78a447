/** The few DOM helpers the views share. Text goes in as text, never as HTML. */

/** The element with this id; a missing one is a bug in index.html. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

/** A new element with a class, text and attributes. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  options: { className?: string; text?: string; attrs?: Record<string, string> } = {},
  ...children: Node[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (options.className) e.className = options.className;
  if (options.text !== undefined) e.textContent = options.text;
  for (const [k, v] of Object.entries(options.attrs ?? {})) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

/** Sets text only when it changed (no needless layout, no lost selection). */
export function setText(e: Element, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}

/**
 * Runs `move` (which may detach and re-insert elements) and gives focus back
 * to the element that had it, if it is still in the page.
 */
export function keepingFocus(move: () => void): void {
  const active = document.activeElement;
  move();
  if (active instanceof HTMLElement && active !== document.activeElement && active.isConnected) active.focus();
}
