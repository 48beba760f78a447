/**
 * The rule that decides whether a command line hits a prohibited or ceremony
 * entry.
 *
 * Both the command and each entry are split into words: maximal runs of
 * letters (with their combining marks), digits and underscores, compared
 * case-insensitively after NFC normalisation. An entry
 * matches when its words appear in the command as consecutive whole words.
 * So `drop` matches `psql -c "DROP TABLE t"` and `/usr/bin/drop`, but not
 * `dropdb` or `drop_table`; `rm -rf` matches `sudo rm -rf /tmp/x` but not
 * `rm -r -f`. Punctuation between words is ignored.
 */

// Combining marks belong to their word: without \p{M}, a Devanagari vowel sign or a
// decomposed accent would split one word in two, so `हट` would match inside `हटाओ`.
const WORD = /[\p{L}\p{M}\p{N}_]+/gu;

/** Splits text into lower-case words. */
export function words(text: string): string[] {
  // NFC (after lower-casing, which can itself decompose) makes a decomposed "é" and a
  // precomposed one the same word; otherwise typing a prohibited entry decomposed dodges it.
  return (text.toLowerCase().normalize("NFC").match(WORD) ?? []) as string[];
}

/** A compiled list of entries, matched against many commands. */
export class CommandMatcher {
  private readonly entries: { entry: string; words: string[] }[];

  constructor(entries: readonly string[]) {
    this.entries = entries.map((entry) => ({ entry, words: words(entry) })).filter((e) => e.words.length > 0);
  }

  /** The first entry that matches `command`, or undefined. */
  match(command: string): string | undefined {
    if (this.entries.length === 0) return undefined;
    const cmd = words(command);
    for (const { entry, words: w } of this.entries) {
      if (containsRun(cmd, w)) return entry;
    }
    return undefined;
  }
}

function containsRun(haystack: string[], needle: string[]): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}
