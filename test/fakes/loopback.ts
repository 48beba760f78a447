/**
 * The lifecycle every loopback fake shares: listen on 127.0.0.1 (an
 * ephemeral port, kept across down/up so a client sees the same service
 * refuse and then accept connections), and delays that close() cuts short.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

export abstract class LoopbackFake {
  protected port = 0;
  protected listening = false;
  private readonly pending = new Set<() => void>();

  protected constructor(protected readonly server: Server) {}

  /** Stops listening and drops open connections: connections are refused until up(). */
  async down(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  /** Listens again, on the same port once it has one. */
  async up(): Promise<void> {
    if (this.listening) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.port, "127.0.0.1", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.listening = true;
  }

  /** Ends pending delays, then goes down. */
  async close(): Promise<void> {
    for (const cancel of this.pending) cancel();
    this.pending.clear();
    await this.down();
  }

  /** Waits `ms`, or until close(). Callers check `listening` afterwards. */
  protected sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(cancel);
        resolve();
      }, ms);
      const cancel = () => {
        clearTimeout(timer);
        resolve();
      };
      this.pending.add(cancel);
    });
  }
}
