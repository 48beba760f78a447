/** The command line's exit codes, one meaning each (README "Command line"). */
export const EXIT = {
  /** Done; `authorize`: ALLOW. */
  ok: 0,
  /** The broker answered with an error, or could not be reached; a start-up failure of `serve`. */
  error: 1,
  /** Usage: an unknown verb or option, a missing argument, a bad value. */
  usage: 2,
  /** `authorize`: DENY. */
  denied: 3,
  /** `authorize`: CEREMONY_REQUIRED (the ceremony id is printed). */
  ceremonyRequired: 4,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
