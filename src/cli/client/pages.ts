/** Paging for the list verbs: one page, or every page with --all. */

/** Reads pages from `first` on: one, or all of them when `all`; the items in order and the token of the page after. */
export async function collectPages<T>(
  first: string,
  all: boolean,
  fetch: (pageToken: string) => Promise<{ items: T[]; next: string }>,
): Promise<{ items: T[]; next: string }> {
  const items: T[] = [];
  let next = first;
  for (;;) {
    const page = await fetch(next);
    items.push(...page.items);
    next = page.next;
    if (!all || next === "") return { items, next };
  }
}
