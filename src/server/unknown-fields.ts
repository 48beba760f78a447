/**
 * Requests carrying a field the broker does not understand are refused with
 * INVALID_ARGUMENT (reason UNKNOWN_FIELD, the field's path in ErrorDetail)
 * before any handler runs, on every transport. Ignoring them fails open: the
 * prototype's `scope.max_ttl_minutes: 5` silently became a 60-minute
 * delegation, and a client written against a newer contract would get
 * defaults it did not ask for.
 *
 * Binary protobuf keeps such fields in `$unknown` while decoding;
 * findUnknownField walks a decoded request for them (grpc-adapter.ts on the
 * gRPC port, refuseUnknownFields on the web port). Connect drops unknown
 * JSON keys by default; strictJsonOptions parses JSON strictly and names the
 * field first.
 */
import type { DescEnum, DescField, DescMessage, JsonReadOptions, JsonWriteOptions, Message } from "@bufbuild/protobuf";
import { hasCustomJsonRepresentation } from "@bufbuild/protobuf/wkt";
import type { ConnectError, Interceptor } from "@connectrpc/connect";
import { BrokerError, invalidArgument } from "../domain/index.js";
import { toConnectError } from "./errors.js";

/** An unknown field found in a decoded binary request. */
export interface UnknownField {
  /** Path of the message that held it, in proto field names ("" for the request itself). */
  path: string;
  /** Its field number. */
  number: number;
  /** Type of the message that held it. */
  typeName: string;
}

/** A field of a message whose value may hold messages: the only ones the walk descends into. */
interface Child {
  name: string;
  localName: string;
  /** Local name of the oneof the field is in: its value sits under the oneof as `{ case, value }`. */
  oneof: string | undefined;
  kind: "message" | "list" | "map";
  desc: DescMessage;
}

const children = new WeakMap<DescMessage, readonly Child[]>();

// Built on first use per type (not eagerly, so recursive types are no problem).
function childrenOf(desc: DescMessage): readonly Child[] {
  const cached = children.get(desc);
  if (cached) return cached;
  const list: Child[] = [];
  for (const f of desc.fields) {
    const common = { name: f.name, localName: f.localName, oneof: f.oneof?.localName };
    if (f.fieldKind === "message") list.push({ ...common, kind: "message", desc: f.message });
    else if (f.fieldKind === "list" && f.listKind === "message") list.push({ ...common, kind: "list", desc: f.message });
    else if (f.fieldKind === "map" && f.mapKind === "message") list.push({ ...common, kind: "map", desc: f.message });
  }
  children.set(desc, list);
  return list;
}

function within(prefix: string, found: UnknownField): UnknownField {
  return { ...found, path: found.path === "" ? prefix : `${prefix}.${found.path}` };
}

/**
 * The first unknown field in `message` or any message inside it (singular,
 * repeated, map values, oneof members), or undefined. Runs on every request:
 * property reads only, and the path is built only when something is found.
 */
export function findUnknownField(desc: DescMessage, message: Message): UnknownField | undefined {
  const unknown = message.$unknown;
  if (unknown !== undefined && unknown.length > 0) return { path: "", number: unknown[0]!.no, typeName: desc.typeName };
  const fields = childrenOf(desc);
  if (fields.length === 0) return undefined;
  const values = message as unknown as Record<string, unknown>;
  for (const c of fields) {
    let value: unknown;
    if (c.oneof === undefined) value = values[c.localName];
    else {
      const o = values[c.oneof] as { case: string | undefined; value?: unknown };
      value = o.case === c.localName ? o.value : undefined;
    }
    if (value === undefined) continue;
    if (c.kind === "message") {
      const found = findUnknownField(c.desc, value as Message);
      if (found) return within(c.name, found);
    } else if (c.kind === "list") {
      const items = value as Message[];
      for (let i = 0; i < items.length; i++) {
        const found = findUnknownField(c.desc, items[i]!);
        if (found) return within(`${c.name}[${i}]`, found);
      }
    } else {
      const entries = value as Record<string, Message>;
      for (const key in entries) {
        const found = findUnknownField(c.desc, entries[key]!);
        if (found) return within(`${c.name}[${quoted(key)}]`, found);
      }
    }
  }
  return undefined;
}

/** INVALID_ARGUMENT for an unknown binary field, e.g. "scope: unknown field 9". */
export function unknownFieldError(found: UnknownField): ConnectError {
  return toConnectError(
    new BrokerError("INVALID_ARGUMENT", "UNKNOWN_FIELD", `${found.path || found.typeName}: unknown field ${found.number}`, {
      field: found.path,
      metadata: { field_number: String(found.number), message_type: found.typeName },
    }),
  );
}

/** `message` refused with its first unknown field, if it has one. */
function assertKnown(desc: DescMessage, message: Message): void {
  const found = findUnknownField(desc, message);
  if (found) throw unknownFieldError(found);
}

async function* checkedEach(desc: DescMessage, messages: AsyncIterable<Message>): AsyncIterable<Message> {
  for await (const m of messages) {
    assertKnown(desc, m);
    yield m;
  }
}

/**
 * Connect interceptor refusing binary requests with unknown fields, on every
 * protocol of the web port. A server stream's request is checked as Connect
 * reads it, before the handler is called.
 */
export const refuseUnknownFields: Interceptor = (next) => async (req) => {
  if (!req.stream) {
    assertKnown(req.method.input, req.message);
    return next(req);
  }
  return next({ ...req, message: checkedEach(req.method.input, req.message) });
};

// Keys are request text: bounded so that the path fits in a gRPC trailer (see errors.ts).
const MAX_KEY_CHARS = 64;

function quoted(key: string): string {
  return JSON.stringify(key.length > MAX_KEY_CHARS ? `${key.slice(0, MAX_KEY_CHARS - 1)}…` : key);
}

function join(path: string, name: string): string {
  const bounded = name.length > MAX_KEY_CHARS ? `${name.slice(0, MAX_KEY_CHARS - 1)}…` : name;
  return path === "" ? bounded : `${path}.${bounded}`;
}

const jsonFields = new WeakMap<DescMessage, ReadonlyMap<string, DescField>>();

// Protobuf JSON accepts a field by its JSON name and by its proto name.
function jsonFieldsOf(desc: DescMessage): ReadonlyMap<string, DescField> {
  let map = jsonFields.get(desc);
  if (!map) {
    const m = new Map<string, DescField>();
    for (const f of desc.fields) m.set(f.name, f).set(f.jsonName, f);
    jsonFields.set(desc, (map = m));
  }
  return map;
}

function knownEnumValue(desc: DescEnum, value: unknown): boolean {
  // Numbers are accepted as protobuf JSON says (proto3 enums are open); handlers validate them.
  return typeof value !== "string" || desc.values.some((v) => v.name === value);
}

function unknownEnum(path: string, desc: DescEnum, value: string): BrokerError {
  return invalidArgument(path, `unknown value ${quoted(value)} of ${desc.typeName}`);
}

// protobuf's own JSON parser refuses the same depth.
const MAX_JSON_DEPTH = 100;

/**
 * The first problem in a request's JSON that protobuf's strict parser would
 * refuse without naming where it is: a key that is no field (by either
 * name), an enum name that is no value, a field set by both of its names.
 * Shapes and types are left to the parser.
 */
export function checkJson(desc: DescMessage, json: unknown, path = "", depth = 0): BrokerError | undefined {
  if (depth > MAX_JSON_DEPTH || hasCustomJsonRepresentation(desc)) return undefined;
  if (json === null || typeof json !== "object" || Array.isArray(json)) return undefined;
  const fields = jsonFieldsOf(desc);
  let seen: Map<DescField, string> | undefined;
  for (const [key, value] of Object.entries(json)) {
    const field = fields.get(key);
    if (!field) {
      return new BrokerError("INVALID_ARGUMENT", "UNKNOWN_FIELD", `${join(path, key)}: unknown field of ${desc.typeName}`, {
        field: join(path, key),
        metadata: { message_type: desc.typeName },
      });
    }
    const at = join(path, field.name);
    const other = (seen ??= new Map()).get(field);
    if (other !== undefined) return invalidArgument(at, `set twice, as ${quoted(other)} and ${quoted(key)}`);
    seen.set(field, key);
    if (value === null) continue;
    const problem = checkValue(field, value, at, depth);
    if (problem) return problem;
  }
  return undefined;
}

function checkValue(field: DescField, value: unknown, at: string, depth: number): BrokerError | undefined {
  switch (field.fieldKind) {
    case "message":
      return checkJson(field.message, value, at, depth + 1);
    case "enum":
      return knownEnumValue(field.enum, value) ? undefined : unknownEnum(at, field.enum, value as string);
    case "list":
      if (!Array.isArray(value) || field.listKind === "scalar") return undefined;
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        const problem =
          field.listKind === "message"
            ? checkJson(field.message, item, `${at}[${i}]`, depth + 1)
            : knownEnumValue(field.enum, item)
              ? undefined
              : unknownEnum(`${at}[${i}]`, field.enum, item as string);
        if (problem) return problem;
      }
      return undefined;
    case "map":
      if (value === null || typeof value !== "object" || Array.isArray(value) || field.mapKind === "scalar") return undefined;
      for (const [key, item] of Object.entries(value)) {
        const problem =
          field.mapKind === "message"
            ? checkJson(field.message, item, `${at}[${quoted(key)}]`, depth + 1)
            : knownEnumValue(field.enum, item)
              ? undefined
              : unknownEnum(`${at}[${quoted(key)}]`, field.enum, item as string);
        if (problem) return problem;
      }
      return undefined;
    default:
      return undefined;
  }
}

type JsonOptions = Partial<JsonReadOptions & JsonWriteOptions>;

/**
 * Connect JSON options for requests of type `desc`: unknown keys and enum
 * names are refused (Connect ignores them by default), with the broker's
 * error naming the field.
 *
 * The naming needs the request's JSON text, which Connect only hands to its
 * text decoder: connect-es's JSON serialization (protocol/serialization.js,
 * version pinned in package.json) decodes the body with `textDecoder` just
 * before protobuf parses it, and passes a ConnectError thrown there through
 * as it is. Should a later version stop calling it, `ignoreUnknownFields:
 * false` still refuses the request, only with protobuf's message (the key
 * and its message type, not its path): test/api/unknown-fields.test.ts
 * checks the path.
 */
export function strictJsonOptions(desc: DescMessage): JsonOptions & { textDecoder: { decode(input?: Uint8Array): string } } {
  const utf8 = new TextDecoder();
  return {
    ignoreUnknownFields: false,
    textDecoder: {
      decode(input?: Uint8Array): string {
        const text = utf8.decode(input);
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          return text; // protobuf's parser reports malformed JSON
        }
        const problem = checkJson(desc, json);
        if (problem) throw toConnectError(problem);
        return text;
      },
    },
  };
}
