/**
 * A fake Chronicle webhook receiver on a real loopback HTTP server
 * (127.0.0.1, port 0). It accepts Forgejo push webhooks on POST /webhook
 * (400 without `X-Forgejo-Event: push`, an `X-Forgejo-Delivery` id or a JSON
 * body), records each delivery with its headers and parsed body, and
 * de-duplicates by delivery id, counting duplicates, as Chronicle does.
 *
 * Faults: the next answers a status (500, 503, 400, …), a delay (the event is
 * still recorded when the delay ends, as a slow server would), and down
 * (connections refused) and back up.
 */
import { type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { LoopbackFake } from "./loopback.js";

export interface ChronicleDelivery {
  /** X-Forgejo-Delivery. */
  deliveryId: string;
  /** X-Forgejo-Event. */
  event: string;
  headers: IncomingHttpHeaders;
  text: string;
  body: Record<string, unknown>;
}

type Fault = { kind: "status"; status: number; body: string } | { kind: "delay"; ms: number };

export const WEBHOOK_PATH = "/webhook";

export class ChronicleFake extends LoopbackFake {
  /** Every request that reached the server, accepted or not. */
  readonly attempts: { method: string; path: string; headers: IncomingHttpHeaders; text: string }[] = [];
  /** Every accepted delivery, duplicates included, in arrival order. */
  readonly deliveries: ChronicleDelivery[] = [];
  /** Accepted deliveries whose id had already been recorded. */
  duplicates = 0;

  private readonly unique = new Map<string, ChronicleDelivery>();
  private readonly faults: Fault[] = [];
  private waiters: { ready: () => boolean; resolve: () => void }[] = [];

  private constructor(server: Server) {
    super(server);
  }

  /** Starts a fake on an ephemeral loopback port. */
  static async start(): Promise<ChronicleFake> {
    let fake!: ChronicleFake;
    const server = createServer((req, res) => void fake.handle(req, res));
    fake = new ChronicleFake(server);
    await fake.up();
    return fake;
  }

  /** The webhook URL (CHRONICLE_WEBHOOK_URL). */
  get webhookUrl(): string {
    return `http://127.0.0.1:${this.port}${WEBHOOK_PATH}`;
  }

  /** The unique events, in the order they first arrived. */
  received(): ChronicleDelivery[] {
    return [...this.unique.values()];
  }

  /** The next `n` answers are `status` (the event is not recorded). */
  failNext(n: number, status: number, body = `fake answered ${status}`): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: "status", status, body });
  }

  /** Drops every fault still queued. */
  clearFaults(): void {
    this.faults.length = 0;
  }

  /** The next `n` requests are handled after `ms`, whether or not the sender is still waiting. */
  delayNext(n: number, ms: number): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: "delay", ms });
  }

  /** Resolves once `n` unique events have been recorded. */
  waitForReceived(n: number): Promise<void> {
    return this.until(() => this.unique.size >= n);
  }

  /** Resolves once `n` deliveries, duplicates included, have been accepted (e.g. a delayed one lands). */
  waitForDeliveries(n: number): Promise<void> {
    return this.until(() => this.deliveries.length >= n);
  }

  private until(ready: () => boolean): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ ready, resolve }));
  }




  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    this.attempts.push({ method: req.method ?? "", path: req.url ?? "/", headers: req.headers, text });

    const fault = this.faults.shift();
    if (fault?.kind === "status") {
      res.writeHead(fault.status, { "content-type": "text/plain" });
      res.end(fault.body);
      return;
    }
    if (fault?.kind === "delay") {
      await this.sleep(fault.ms);
      if (!this.listening) return;
    }

    if (req.method !== "POST" || req.url !== WEBHOOK_PATH) return reply(res, 404, "not found");
    const event = header(req.headers["x-forgejo-event"]);
    const deliveryId = header(req.headers["x-forgejo-delivery"]);
    if (event !== "push") return reply(res, 400, `unsupported event "${event}"`);
    if (deliveryId === "") return reply(res, 400, "missing X-Forgejo-Delivery");
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return reply(res, 400, "body is not JSON");
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) return reply(res, 400, "body is not an object");

    const delivery: ChronicleDelivery = { deliveryId, event, headers: req.headers, text, body: body as Record<string, unknown> };
    this.deliveries.push(delivery);
    if (this.unique.has(deliveryId)) {
      this.duplicates++;
      reply(res, 200, "duplicate");
    } else {
      this.unique.set(deliveryId, delivery);
      reply(res, 202, "recorded");
    }
    const ready = this.waiters.filter((w) => w.ready());
    this.waiters = this.waiters.filter((w) => !w.ready());
    for (const w of ready) w.resolve();
  }
}

function header(v: string | string[] | undefined): string {
  return Array.isArray(v) ? (v[0] ?? "") : (v ?? "");
}

function reply(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "text/plain" });
  res.end(text);
}
