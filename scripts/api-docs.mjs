// Generates docs/api.md, the API reference, from the comments in proto/llmbroker
// (buf build's descriptors with source info). `node scripts/api-docs.mjs` writes
// it; `--check` fails when it is stale or when an RPC, message, field, enum or
// enum value has no comment (test/unit/api-docs.test.ts runs the check).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary, isFieldSet } from "@bufbuild/protobuf";
import { FieldDescriptorProtoSchema, FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const OUT = join(root, "docs", "api.md");

/** The generated reference, and what lacks a comment. */
export function generate() {
  const image = execFileSync(join(root, "node_modules", ".bin", "buf"), ["build", "--path", "proto/llmbroker", "-o", "-#format=binpb"], {
    cwd: root,
    maxBuffer: 64 * 1024 * 1024,
  });
  const set = fromBinary(FileDescriptorSetSchema, image);
  const files = set.file.filter((f) => f.name.startsWith("llmbroker/"));
  const missing = [];
  const out = [
    "# API reference",
    "",
    "Generated from the comments in `proto/llmbroker/v1` by `node scripts/api-docs.mjs`; do not edit by hand",
    "(a test fails when this file is stale or an element has no comment). The README explains the behaviour.",
    "",
  ];
  for (const file of files) {
    const comments = new Map();
    for (const loc of file.sourceCodeInfo?.location ?? []) {
      const text = (loc.leadingComments ?? "").trim() || (loc.trailingComments ?? "").trim();
      if (text) comments.set(loc.path.join("."), text.replace(/\n ?/g, " ").replace(/\s+/g, " "));
    }
    const doc = (path, what) => {
      const c = comments.get(path.join("."));
      if (!c) missing.push(`${file.name}: ${what}`);
      return c ?? "";
    };
    const pkg = file.package;
    for (const [i, svc] of file.service.entries()) {
      out.push(`## service ${pkg}.${svc.name}`, "", escape(doc([6, i], `service ${svc.name}`)), "");
      out.push("| RPC | request | response | |", "|---|---|---|---|");
      for (const [j, m] of svc.method.entries()) {
        const stream = m.serverStreaming ? "stream " : "";
        out.push(`| \`${m.name}\` | ${typeName(m.inputType)} | ${stream}${typeName(m.outputType)} | ${cell(doc([6, i, 2, j], `rpc ${svc.name}.${m.name}`))} |`);
      }
      out.push("");
    }
    out.push(`## ${file.name}`, "");
    const messages = (list, prefix, path) => {
      for (const [i, msg] of list.entries()) {
        // A map's entry message is the compiler's: no source, no comment; the map field shows it as map<K, V>.
        if (msg.options?.mapEntry) continue;
        const name = `${prefix}${msg.name}`;
        const p = [...path, i];
        out.push(`### ${name}`, "", escape(doc(p, `message ${name}`)), "");
        if (msg.field.length > 0) {
          out.push("| field | type | |", "|---|---|---|");
          for (const [j, f] of msg.field.entries()) {
            const oneof = isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional ? ` (oneof \`${msg.oneofDecl[f.oneofIndex].name}\`)` : "";
            out.push(`| \`${f.name}\` = ${f.number} | ${typeOf(f, msg)} | ${cell(doc([...p, 2, j], `field ${name}.${f.name}`))}${oneof} |`);
          }
          out.push("");
        }
        enums(msg.enumType, `${name}.`, [...p, 4]);
        messages(msg.nestedType, `${name}.`, [...p, 3]);
      }
    };
    const enums = (list, prefix, path) => {
      for (const [i, en] of list.entries()) {
        const name = `${prefix}${en.name}`;
        const p = [...path, i];
        out.push(`### ${name}`, "", escape(doc(p, `enum ${name}`)), "", "| value | number | |", "|---|---|---|");
        for (const [j, v] of en.value.entries()) {
          // The zero value of every enum is UNSPECIFIED by buf's rules: documented once here.
          const text = v.number === 0 && v.name.endsWith("_UNSPECIFIED") ? "not set" : doc([...p, 2, j], `enum value ${name}.${v.name}`);
          out.push(`| \`${v.name}\` | ${v.number} | ${cell(text)} |`);
        }
        out.push("");
      }
    };
    messages(file.messageType, `${pkg}.`, [4]);
    enums(file.enumType, `${pkg}.`, [5]);
  }
  return { text: `${out.join("\n").replace(/\n{3,}/g, "\n\n").trimEnd()}\n`, missing };
}

function short(type) {
  return type.replace(/^\./, "");
}
function anchor(type) {
  return short(type).toLowerCase().replace(/[^a-z0-9]/g, "");
}
function cell(text) {
  return escape(text).replace(/\|/g, "\\|");
}
/** Markdown text: angle brackets shown as written, never read as HTML. */
function escape(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
const WKT = "https://protobuf.dev/reference/protobuf/google.protobuf/#";
function typeName(name) {
  const t = short(name);
  // Well-known types are documented by protobuf.dev; our own messages here.
  if (t.startsWith("google.protobuf.")) return `[${t}](${WKT}${t.slice("google.protobuf.".length).toLowerCase()})`;
  return `[${t}](#${anchor(name)})`;
}
function scalarOrType(f) {
  return f.typeName ? typeName(f.typeName) : FieldDescriptorProto_Type[f.type].toLowerCase();
}
function typeOf(f, msg) {
  const entry = f.typeName ? msg.nestedType.find((n) => n.options?.mapEntry && f.typeName.endsWith(`.${msg.name}.${n.name}`)) : undefined;
  if (entry) return `map&lt;${scalarOrType(entry.field[0])}, ${scalarOrType(entry.field[1])}&gt;`;
  const repeated = f.label === FieldDescriptorProto_Label.REPEATED ? "repeated " : "";
  return `${repeated}${scalarOrType(f)}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { text, missing } = generate();
  if (process.argv.includes("--check")) {
    const current = readFileSync(OUT, "utf8");
    const problems = [...missing.map((m) => `no comment: ${m}`), ...(current === text ? [] : ["docs/api.md is stale: run node scripts/api-docs.mjs"])];
    for (const p of problems) console.error(p);
    process.exit(problems.length > 0 ? 1 : 0);
  }
  writeFileSync(OUT, text);
  console.error(`api-docs: wrote docs/api.md${missing.length > 0 ? `; ${missing.length} elements have no comment:\n  ${missing.join("\n  ")}` : ""}`);
}
