import { describe, expect, it } from "vitest";
import { CommandMatcher, words } from "../../src/delegation/command-matcher.js";

const matches = (entries: string[], command: string) => new CommandMatcher(entries).match(command);

describe("words", () => {
  it("splits on everything but letters, digits and underscores, lower-cased", () => {
    expect(words(`psql -c "DROP TABLE t"`)).toEqual(["psql", "c", "drop", "table", "t"]);
    expect(words("/usr/bin/drop_table --x=1")).toEqual(["usr", "bin", "drop_table", "x", "1"]);
    expect(words("-- ;|&")).toEqual([]);
  });

  it("keeps combining marks inside their word", () => {
    // U+093E DEVANAGARI VOWEL SIGN AA is a mark; without \p{M} this splits into two words.
    expect(words("हटाओ")).toEqual(["हटाओ"]);
  });
});

describe("CommandMatcher", () => {
  it("matches a one-word entry as a whole word, case-insensitively, anywhere in the command", () => {
    expect(matches(["drop"], `psql -c "DROP TABLE t"`)).toBe("drop");
    expect(matches(["drop"], "/usr/bin/drop")).toBe("drop");
    expect(matches(["DROP"], "drop it")).toBe("DROP");
  });

  it("does not match a word that merely contains the entry", () => {
    expect(matches(["drop"], "dropdb prod")).toBeUndefined();
    expect(matches(["drop"], "call drop_table()")).toBeUndefined();
    expect(matches(["drop"], "set-backdrop")).toBeUndefined();
  });

  it("matches a multi-word entry only as consecutive words, ignoring punctuation between them", () => {
    expect(matches(["rm -rf"], "sudo rm -rf /tmp/x")).toBe("rm -rf");
    expect(matches(["rm -rf"], "sudo rm --rf /tmp/x")).toBe("rm -rf");
    expect(matches(["rm -rf"], "rm -r -f /tmp/x")).toBeUndefined();
    expect(matches(["rm -rf"], "rm x -rf")).toBeUndefined();
    expect(matches(["git push"], "git  push --force")).toBe("git push");
    expect(matches(["git push"], "push git")).toBeUndefined();
  });

  it("matches an entry whose run is the whole command or its end", () => {
    expect(matches(["git push"], "git push")).toBe("git push");
    expect(matches(["git push"], "cd x && git push")).toBe("git push");
    expect(matches(["git push"], "cd x && git")).toBeUndefined();
  });

  it("compares unicode letters case-insensitively and as whole words", () => {
    expect(matches(["löschen"], "LÖSCHEN alles")).toBe("löschen");
    expect(matches(["удалить"], "УДАЛИТЬ базу")).toBe("удалить");
    expect(matches(["löschen"], "löschenalles")).toBeUndefined();
    expect(matches(["हट"], "हटाओ")).toBeUndefined();
    expect(matches(["हटाओ"], "अभी हटाओ")).toBe("हटाओ");
  });

  it("treats precomposed and decomposed accents as the same letter", () => {
    const precomposed = "supprim\u00e9";
    const decomposed = "supprime\u0301";
    expect(matches([precomposed], `${decomposed} tout`)).toBe(precomposed);
    expect(matches([decomposed], `${precomposed} tout`)).toBe(decomposed);
    expect(matches(["supprime"], `${decomposed} tout`)).toBeUndefined();
  });

  it("matches nothing with no entries or only wordless entries", () => {
    expect(matches([], "rm -rf /")).toBeUndefined();
    expect(matches(["--", "  "], "rm -- -rf")).toBeUndefined();
  });

  it("matches nothing in a command without words", () => {
    expect(matches(["drop"], "")).toBeUndefined();
    expect(matches(["drop"], "|| ;;")).toBeUndefined();
  });

  it("returns the first matching entry in list order, as written", () => {
    const m = new CommandMatcher(["curl", "DROP table", "drop"]);
    expect(m.match("drop table t")).toBe("DROP table");
    expect(m.match("curl x | psql -c 'drop table t'")).toBe("curl");
    expect(m.match("drop index i")).toBe("drop");
  });

  it("can be reused for many commands", () => {
    const m = new CommandMatcher(["shutdown"]);
    expect(m.match("shutdown -h now")).toBe("shutdown");
    expect(m.match("ls")).toBeUndefined();
    expect(m.match("sudo SHUTDOWN")).toBe("shutdown");
  });
});
