/** The broker's error detail on a failed call. */
import { ConnectError } from "@connectrpc/connect";
import { type ErrorDetail, ErrorDetailSchema } from "../gen/llmbroker/v1/delegation_pb.js";

/**
 * The `llmbroker.v1.ErrorDetail` (reason, field, metadata) the broker attaches
 * to every error it returns; undefined for an error that did not come from it
 * (a network failure, a proxy's answer).
 */
export function errorDetailOf(err: unknown): ErrorDetail | undefined {
  return ConnectError.from(err).findDetails(ErrorDetailSchema)[0];
}
