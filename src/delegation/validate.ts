/**
 * Field validation for request inputs. Each check names the field in its
 * INVALID_ARGUMENT and returns the value to use.
 */
import { invalidArgument } from "../domain/index.js";

// Printable ASCII without quotes, backslash or whitespace: safe in logs, URLs and IdP attributes.
const IDENT = /^[A-Za-z0-9][A-Za-z0-9._:@\/+=-]*$/;
const AGENT_TYPE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
// del_ + ULID as this broker issues them, or del- + 8 hex digits as the Python prototype did
// (imported by migrate-prototype, so they stay addressable).
const DELEGATION_ID = /^(?:del_[0-9A-Z]{26}|del-[0-9a-f]{8})$/;
// did:method:method-specific-id (W3C DID core syntax, ASCII subset).
const DID = /^did:[a-z0-9]+:[A-Za-z0-9._:%\/-]+$/;
// C0, DEL and C1 (U+0080-U+009F, e.g. NEL, CSI): any of them can forge log lines or drive terminals.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** An id-like field (access context ids, accord template names): at most 256 characters. */
export function identifier(field: string, value: string, opts: { required?: boolean } = {}): string {
  if (value === "") {
    if (opts.required) throw invalidArgument(field, "is required");
    return "";
  }
  if (value.length > 256) throw invalidArgument(field, "must be at most 256 characters");
  if (!IDENT.test(value)) throw invalidArgument(field, "may contain only letters, digits and . _ : @ / + = -");
  return value;
}

/** agent_type: lower-case letters, digits, '.', '_' and '-', at most 63 characters. */
export function agentType(field: string, value: string): string {
  if (!AGENT_TYPE.test(value)) {
    throw invalidArgument(field, "must be 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  return value;
}

/** Free text without control characters. */
export function text(field: string, value: string, max: number): string {
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters`);
  if (CONTROL.test(value)) throw invalidArgument(field, "must not contain control characters");
  return value;
}

/** A revocation reason: 1-256 characters of text. */
export function reason(field: string, value: string): string {
  if (value === "") throw invalidArgument(field, "is required");
  return text(field, value, 256);
}

/** request_id: empty (no idempotency) or 1-128 characters of an identifier. */
export function requestId(field: string, value: string): string {
  if (value === "") return "";
  if (value.length > 128) throw invalidArgument(field, "must be at most 128 characters");
  if (!IDENT.test(value)) throw invalidArgument(field, "may contain only letters, digits and . _ : @ / + = -");
  return value;
}

/** True for a delegation id this broker issues, or one imported from the prototype. */
export function isDelegationId(value: string): boolean {
  return DELEGATION_ID.test(value);
}

/** A delegation id as the broker issues them (del_ + 26 characters), or an imported prototype id. */
export function delegationId(field: string, value: string): string {
  if (value === "") throw invalidArgument(field, "is required");
  if (!DELEGATION_ID.test(value)) throw invalidArgument(field, "is not a delegation id (del_ followed by 26 characters)");
  return value;
}

const CEREMONY_ID = /^cer_[0-9A-Z]{26}$/;

/** A ceremony id: cer_ and a ULID. */
export function ceremonyId(field: string, value: string, opts: { required?: boolean } = {}): string {
  if (value === "") {
    if (opts.required) throw invalidArgument(field, "is required");
    return "";
  }
  if (!CEREMONY_ID.test(value)) throw invalidArgument(field, "is not a ceremony id (cer_ followed by 26 characters)");
  return value;
}

/** A DID, at most 512 characters. */
export function did(field: string, value: string): string {
  if (value.length > 512 || !DID.test(value)) throw invalidArgument(field, "is not a DID (did:method:id)");
  return value;
}

/** A command line: 1-8192 characters without NUL. */
export function command(field: string, value: string): string {
  if (value.trim() === "") throw invalidArgument(field, "is required");
  if (value.length > 8192) throw invalidArgument(field, "must be at most 8192 characters");
  if (value.includes("\u0000")) throw invalidArgument(field, "must not contain NUL");
  return value;
}
