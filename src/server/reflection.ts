/**
 * gRPC server reflection, `grpc.reflection.v1.ServerReflection` and its
 * predecessor `grpc.reflection.v1alpha.ServerReflection`, so that buf curl,
 * grpcurl and Postman find the broker's services without the proto files.
 *
 * It answers from the descriptors protoc-gen-es embedded in src/gen: each
 * served service's file and every file it imports, down to
 * google/protobuf/*, as FileDescriptorProtos. That is the public contract
 * and nothing more (no state, no configuration), so reflection needs no
 * credentials; GRPC_REFLECTION=false turns it off.
 */
import { type DescFile, type DescService, create, toBinary } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Undecodable, grpcMethod, refuse } from "./grpc-method.js";

/** The two reflection services, newest first. */
export const REFLECTION_SERVICES: readonly DescService[] = [v1.ServerReflection, v1alpha.ServerReflection];

/** What a client asks (the same in v1 and v1alpha). */
type Question =
  | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };

/** What the server answers (the same in v1 and v1alpha). */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/**
 * The descriptors reflection answers from: the services served, the files
 * that declare them and every file those import, indexed by file name and
 * by every fully-qualified name they declare (messages, fields, oneofs,
 * enums, enum values, services, methods, extensions).
 */
export class DescriptorIndex {
  /** Fully-qualified names of the services, in the order given. */
  readonly services: readonly string[];
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();
  private readonly messages = new Set<string>();
  private readonly encoded = new Map<DescFile, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.services = services.map((s) => s.typeName);
    for (const s of services) this.addFile(s.file);
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.proto.name)) return;
    this.files.set(file.proto.name, file);
    for (const dep of file.dependencies) this.addFile(dep);
    const symbol = (name: string) => {
      if (!this.symbols.has(name)) this.symbols.set(name, file);
    };
    for (const t of nestedTypes(file)) {
      symbol(t.typeName);
      switch (t.kind) {
        case "message":
          this.messages.add(t.typeName);
          for (const f of t.fields) symbol(`${t.typeName}.${f.name}`);
          for (const o of t.oneofs) symbol(`${t.typeName}.${o.name}`);
          break;
        case "enum": {
          // Enum values are scoped like their enum's siblings (C++ scoping rules).
          const scope = t.typeName.includes(".") ? t.typeName.slice(0, t.typeName.lastIndexOf(".") + 1) : "";
          for (const v of t.values) symbol(`${scope}${v.name}`);
          break;
        }
        case "service":
          for (const m of t.methods) symbol(`${t.typeName}.${m.name}`);
          break;
        case "extension":
          break;
      }
    }
  }

  /** The file named `name` (e.g. "llmbroker/v1/delegation.proto"). */
  fileByName(name: string): DescFile | undefined {
    return this.files.get(name);
  }

  /** The file that declares the fully-qualified `symbol` (a leading dot is allowed). */
  fileOfSymbol(symbol: string): DescFile | undefined {
    return this.symbols.get(symbol.startsWith(".") ? symbol.slice(1) : symbol);
  }

  /** Whether `typeName` is a message type reflection knows. */
  isMessage(typeName: string): boolean {
    return this.messages.has(typeName.startsWith(".") ? typeName.slice(1) : typeName);
  }

  /**
   * `file` first, then every file it imports (transitively) that is not in
   * `sent`, serialized; each one returned is added to `sent`. A stream need
   * not receive a file twice (the protocol allows it), but the file asked
   * for is always included.
   */
  withDependencies(file: DescFile, sent: Set<string>): Uint8Array[] {
    const out: Uint8Array[] = [];
    const visit = (f: DescFile, asked: boolean) => {
      if (!asked && sent.has(f.proto.name)) return;
      sent.add(f.proto.name);
      out.push(this.bytesOf(f));
      for (const dep of f.dependencies) visit(dep, false);
    };
    visit(file, true);
    return out;
  }

  private bytesOf(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file);
    if (!bytes) this.encoded.set(file, (bytes = toBinary(FileDescriptorProtoSchema, file.proto)));
    return bytes;
  }
}

const notFound = (what: string): Answer => ({
  case: "errorResponse",
  value: { errorCode: grpc.status.NOT_FOUND, errorMessage: what.slice(0, 300) },
});

/** The answer to one request of a stream; `sent` holds the files this stream has already received. */
export function answer(index: DescriptorIndex, question: Question, sent: Set<string>): Answer {
  switch (question.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } };
    case "fileByFilename": {
      const file = index.fileByName(question.value);
      if (!file) return notFound(`file not found: ${question.value}`);
      return { case: "fileDescriptorResponse", value: { fileDescriptorProto: index.withDependencies(file, sent) } };
    }
    case "fileContainingSymbol": {
      const file = index.fileOfSymbol(question.value);
      if (!file) return notFound(`symbol not found: ${question.value}`);
      return { case: "fileDescriptorResponse", value: { fileDescriptorProto: index.withDependencies(file, sent) } };
    }
    case "fileContainingExtension":
      // The broker's protos declare no extensions.
      return notFound(`extension not found: ${question.value.containingType} ${question.value.extensionNumber}`);
    case "allExtensionNumbersOfType":
      if (!index.isMessage(question.value)) return notFound(`type not found: ${question.value}`);
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: question.value, extensionNumber: [] } };
    default:
      return {
        case: "errorResponse",
        value: { errorCode: grpc.status.INVALID_ARGUMENT, errorMessage: "the request names no message_request" },
      };
  }
}

/** One reflection protocol version: its method and how its request and response messages are read and made. */
interface Protocol<Req, Res> {
  method: grpc.MethodDefinition<Req | Undecodable, Res>;
  question(req: Req): Question;
  respond(req: Req, a: Answer): Res;
}

function serve<Req, Res>(server: grpc.Server, index: DescriptorIndex, p: Protocol<Req, Res>): void {
  const handler = (call: grpc.ServerDuplexStream<Req | Undecodable, Res>) => {
    const sent = new Set<string>();
    call.on("data", (req: Req | Undecodable) => {
      if (call.cancelled || call.writableEnded) return;
      if (req instanceof Undecodable) return void call.emit("error", refuse(req));
      call.write(p.respond(req, answer(index, p.question(req), sent)));
    });
    // The client is done asking: so is the server.
    call.on("end", () => {
      if (!call.writableEnded) call.end();
    });
  };
  const name = p.method.originalName ?? "serverReflectionInfo";
  server.addService({ [name]: p.method } as grpc.ServiceDefinition, { [name]: handler as grpc.handleBidiStreamingCall<unknown, unknown> });
}

/**
 * Adds both reflection services to `server`, describing `services` and the
 * reflection services themselves (as grpc-go lists them).
 */
export function addReflectionServices(server: grpc.Server, services: readonly DescService[]): void {
  const index = new DescriptorIndex([...services, ...REFLECTION_SERVICES.filter((s) => !services.includes(s))]);
  serve(server, index, {
    method: grpcMethod(v1.ServerReflection.method.serverReflectionInfo),
    question: (req) => req.messageRequest,
    respond: (req, a) => create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: a }),
  });
  serve(server, index, {
    method: grpcMethod(v1alpha.ServerReflection.method.serverReflectionInfo),
    question: (req) => req.messageRequest,
    respond: (req, a) => create(v1alpha.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: a }),
  });
}
