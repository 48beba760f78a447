/**
 * A child process that holds many WatchDelegations streams open on raw
 * HTTP/2 (node:http2, no gRPC library, so the client costs as little CPU per
 * message as it can) and reports when each stream received its first event
 * after being armed.
 *
 * IPC: {type:"open", port, streams, perSession} -> {type:"opened"};
 *      {type:"arm"} -> resets; when every stream has had an event: {type:"received", times}
 *      (epoch ms, performance.timeOrigin + now, one per stream).
 */
import * as http2 from "node:http2";

const PATH = "/llmbroker.v1.DelegationService/WatchDelegations";
// An empty WatchDelegationsRequest (start_revision 0: from now, no filter), gRPC-framed.
const REQUEST = Buffer.from([0, 0, 0, 0, 0]);

interface Stream {
  buffered: Buffer;
  armed: boolean;
  receivedAt: number;
}

const sessions: http2.ClientHttp2Session[] = [];
const streams: Stream[] = [];
let waiting = 0;
let armed = false;

const now = () => performance.timeOrigin + performance.now();

function onMessage(s: Stream, length: number): void {
  // Checkpoints are a few bytes (a revision); an event carries a whole delegation.
  if (length < 40 || !armed || s.receivedAt !== 0) return;
  s.receivedAt = now();
  if (--waiting === 0) process.send!({ type: "received", times: streams.map((x) => x.receivedAt) });
}

function open(port: number, count: number, perSession: number): Promise<void> {
  let pendingFirst = count;
  return new Promise((resolve, reject) => {
    for (let i = 0; i < count; i++) {
      if (i % perSession === 0) {
        const session = http2.connect(`http://127.0.0.1:${port}`);
        session.on("error", reject);
        sessions.push(session);
      }
      const session = sessions[sessions.length - 1]!;
      const s: Stream = { buffered: Buffer.alloc(0), armed: false, receivedAt: 0 };
      streams.push(s);
      const req = session.request({
        ":method": "POST",
        ":path": PATH,
        "content-type": "application/grpc",
        te: "trailers",
      });
      let first = true;
      req.on("data", (chunk: Buffer) => {
        s.buffered = s.buffered.length === 0 ? chunk : Buffer.concat([s.buffered, chunk]);
        while (s.buffered.length >= 5) {
          const length = s.buffered.readUInt32BE(1);
          if (s.buffered.length < 5 + length) break;
          s.buffered = s.buffered.subarray(5 + length);
          if (first) {
            first = false;
            if (--pendingFirst === 0) resolve();
          }
          onMessage(s, length);
        }
      });
      req.on("error", () => undefined);
      req.end(REQUEST);
    }
  });
}

process.on("message", (m: { type: string; port?: number; streams?: number; perSession?: number }) => {
  if (m.type === "open") {
    open(m.port!, m.streams!, m.perSession!).then(
      () => process.send!({ type: "opened" }),
      (err: unknown) => process.send!({ type: "error", message: String(err) }),
    );
  } else if (m.type === "arm") {
    for (const s of streams) s.receivedAt = 0;
    waiting = streams.length;
    armed = true;
  } else if (m.type === "close") {
    for (const session of sessions) session.destroy();
    process.exit(0);
  }
});
process.on("disconnect", () => process.exit(0));
