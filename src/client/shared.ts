/**
 * What both client entry points export: the service, every message schema and
 * enum of llmbroker.v1, the credentials interceptor, the resuming watch and the
 * error detail helper. Nothing here imports a Node module.
 */
import type { Client } from "@connectrpc/connect";
import type { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";

export { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
export { create, fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
export { durationFromMs, durationMs, timestampDate, timestampFromDate, timestampMs } from "@bufbuild/protobuf/wkt";
export * from "../gen/llmbroker/v1/delegation_pb.js";
export { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
export { type BrokerCredentials, DEV_DID_HEADER, credentialsInterceptor } from "./credentials.js";
export { errorDetailOf } from "./errors.js";
export { type FollowItem, type FollowOptions, followDelegations } from "./follow.js";

/** A typed client of llmbroker.v1.DelegationService. */
export type BrokerClient = Client<typeof DelegationService>;
