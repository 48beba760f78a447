/**
 * google.rpc.Status, to decode grpc-status-details-bin in tests. Built from a
 * hand-written descriptor (the broker itself uses Connect's copy).
 */
import { fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import type { Message } from "@bufbuild/protobuf";
import { file_google_protobuf_any } from "@bufbuild/protobuf/wkt";
import type { Any } from "@bufbuild/protobuf/wkt";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { create, toBinary } from "@bufbuild/protobuf";
import { base64Encode } from "@bufbuild/protobuf/wire";

type Status = Message<"google.rpc.Status"> & { code: number; message: string; details: Any[] };

const file = fileDesc(
  base64Encode(
    toBinary(
      FileDescriptorProtoSchema,
      create(FileDescriptorProtoSchema, {
        name: "google/rpc/status.proto",
        package: "google.rpc",
        dependency: ["google/protobuf/any.proto"],
        syntax: "proto3",
        messageType: [
          {
            name: "Status",
            field: [
              { name: "code", number: 1, type: 5, label: 1, jsonName: "code" },
              { name: "message", number: 2, type: 9, label: 1, jsonName: "message" },
              { name: "details", number: 3, type: 11, label: 3, typeName: ".google.protobuf.Any", jsonName: "details" },
            ],
          },
        ],
      }),
    ),
    "std_raw",
  ),
  [file_google_protobuf_any],
);

export const StatusSchema: GenMessage<Status> = messageDesc(file, 0);
