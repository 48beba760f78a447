/** Raised for a variable that is present but unusable, or missing where another needs it; the message names it. */
export class SettingsError extends Error {
  override name = "SettingsError";
}
