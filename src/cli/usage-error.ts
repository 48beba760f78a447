/** A command line that cannot be run as given: printed as `error: <message>` with exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}
