/**
 * `grpc.health.v1.Health` on the gRPC port, for Kubernetes gRPC probes,
 * grpc-health-probe and clients' health checking
 * (https://github.com/grpc/grpc/blob/master/doc/health-checking.md).
 * Unauthenticated: probes carry no credentials, and a status is all it tells.
 *
 * | service                                  | SERVING when                                            |
 * |------------------------------------------|---------------------------------------------------------|
 * | `""` (the server as a whole)             | the store answers with its schema migrated              |
 * | `llmbroker.v1.DelegationService`         | the same                                                |
 * | `llmbroker.v1.DelegationService/store`   | the same                                                |
 * | `llmbroker.v1.DelegationService/idp`     | identity clean-up and the orphan sweep are not failing  |
 * | `llmbroker.v1.DelegationService/gsap`    | GSAP revocations are not failing                        |
 * | `llmbroker.v1.DelegationService/audit`   | audit delivery is not failing                           |
 *
 * A dependency the broker cannot judge (the store, where the background work
 * records its failures, does not answer) is UNKNOWN. From shutdown on, every
 * service is NOT_SERVING; a Watch is told so and then ends with UNAVAILABLE.
 */
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  Health,
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthListResponse,
  HealthListResponseSchema,
} from "../gen/grpc/health/v1/health_pb.js";
import { DelegationService } from "../gen/llmbroker/v1/delegation_service_pb.js";
import type { DependencyStatus, HealthMonitor, HealthReport } from "./health.js";
import { Undecodable, grpcMethod, refuse } from "./grpc-method.js";

const BY_DEPENDENCY: Record<DependencyStatus, ServingStatus> = {
  ok: ServingStatus.SERVING,
  failing: ServingStatus.NOT_SERVING,
  unknown: ServingStatus.UNKNOWN,
};

const serving = (r: HealthReport) => (r.serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
const dependency = (name: "idp" | "gsap" | "audit") => (r: HealthReport) => BY_DEPENDENCY[r.dependencies[name]];

/** The service names answered, and how each is judged from a report. */
export const HEALTH_SERVICES: ReadonlyMap<string, (r: HealthReport) => ServingStatus> = new Map([
  ["", serving],
  [DelegationService.typeName, serving],
  [`${DelegationService.typeName}/store`, serving],
  [`${DelegationService.typeName}/idp`, dependency("idp")],
  [`${DelegationService.typeName}/gsap`, dependency("gsap")],
  [`${DelegationService.typeName}/audit`, dependency("audit")],
]);

const SHUTTING_DOWN: Partial<grpc.StatusObject> = { code: grpc.status.UNAVAILABLE, details: "the server is shutting down" };

/** Adds `grpc.health.v1.Health` (Check, List, Watch), answering from `monitor`. */
export function addHealthService(server: grpc.Server, monitor: HealthMonitor): void {
  const statusOf = (judge: (r: HealthReport) => ServingStatus, r: HealthReport) => (monitor.closed ? ServingStatus.NOT_SERVING : judge(r));
  const response = (status: ServingStatus) => create(HealthCheckResponseSchema, { status });

  const check = (call: grpc.ServerUnaryCall<HealthCheckRequest | Undecodable, HealthCheckResponse>, done: grpc.sendUnaryData<HealthCheckResponse>) => {
    if (call.request instanceof Undecodable) return done(refuse(call.request));
    const judge = HEALTH_SERVICES.get(call.request.service);
    if (!judge) return done({ code: grpc.status.NOT_FOUND, details: "unknown service" });
    void monitor.report().then((r) => done(null, response(statusOf(judge, r))));
  };

  const list = (call: grpc.ServerUnaryCall<unknown, HealthListResponse>, done: grpc.sendUnaryData<HealthListResponse>) => {
    if (call.request instanceof Undecodable) return done(refuse(call.request));
    void monitor.report().then((r) => {
      const statuses: Record<string, { status: ServingStatus }> = {};
      for (const [name, judge] of HEALTH_SERVICES) statuses[name] = { status: statusOf(judge, r) };
      done(null, create(HealthListResponseSchema, { statuses }));
    });
  };

  const watch = (call: grpc.ServerWritableStream<HealthCheckRequest | Undecodable, HealthCheckResponse>) => {
    if (call.request instanceof Undecodable) return void call.emit("error", refuse(call.request));
    const judge = HEALTH_SERVICES.get(call.request.service);
    let last: ServingStatus | undefined;
    let ended = false;
    const send = (status: ServingStatus) => {
      if (ended || call.cancelled || status === last) return;
      last = status;
      call.write(response(status));
    };
    // An unknown service is answered SERVICE_UNKNOWN and the call stays open, as the protocol says.
    if (!judge) send(ServingStatus.SERVICE_UNKNOWN);
    const stop = monitor.watch({
      report: (r) => {
        if (judge) send(statusOf(judge, r));
      },
      closed: () => {
        if (judge) send(ServingStatus.NOT_SERVING);
        ended = true;
        if (!call.cancelled) call.emit("error", SHUTTING_DOWN);
      },
    });
    call.on("cancelled", () => {
      ended = true;
      stop();
    });
    // The current status first; changes follow from the monitor's polling.
    // (The newest report by then: one made meanwhile may have been sent already.)
    if (judge && !ended) void monitor.report().then((r) => send(statusOf(judge, monitor.last ?? r)));
  };

  server.addService(
    {
      Check: grpcMethod(Health.method.check),
      List: grpcMethod(Health.method.list),
      Watch: grpcMethod(Health.method.watch),
    } as grpc.ServiceDefinition,
    { Check: check, List: list, Watch: watch } as grpc.UntypedServiceImplementation,
  );
}
