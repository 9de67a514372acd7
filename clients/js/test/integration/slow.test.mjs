// A client that stops reading is closed by the server with 4002 (slow
// consumer); it reconnects and resubscribes with recover: every offset
// once, in order, or a gap event, never a silent hole.
import { test } from "node:test";
import assert from "node:assert/strict";
import WS from "ws";
import { api, next, proxy, publish, startServer, until, watch } from "./harness.mjs";
import { Wavecast } from "../../dist/index.mjs";

test("a slow consumer is closed with 4002, reconnects, and recovers or says gap", { timeout: 120000 }, async () => {
  const server = await startServer({ args: ["--max-queued-bytes", "65536", "--workers", "2"] });
  // The client goes through a proxy that can stop reading for it.
  const tcp = await proxy(server.port);
  const c = new Wavecast(`ws://127.0.0.1:${tcp.port}/ws`, { WebSocket: WS, transports: ["websocket"] });
  const downs = [];
  c.on("disconnected", (e) => downs.push(e));
  c.connect();
  const ch = "slow";
  const sub = c.subscribe(ch);
  const w = watch(sub);
  await next(sub, "subscribed");
  try {
    // Stop reading: the kernel's buffers fill, then the server's queue.
    tcp.stall();
    const pad = "x".repeat(16 * 1024);
    let n = 0;
    // Once cut, the queue was dropped and only the close frame waits (the
    // server gives it close_timeout, 5 s, to be written): the queued
    // bytes stop growing however much is published.
    const queued = async () => (await api(server, "info", {}))[1].queued_bytes;
    let before = -1;
    for (;;) {
      await Promise.all(Array.from({ length: 20 }, () => publish(server, ch, { n: n++, pad })));
      const q = await queued();
      if (q > 0 && q == before) break;
      before = q;
      assert.ok(n < 5000, "the server never cut the slow client");
    }
    // Read again: the backlog, then the close.
    tcp.flow();
    await until(() => downs.length > 0, "the close");
    assert.equal(downs[0].code, 4002, JSON.stringify(downs[0]));
    assert.equal(downs[0].reason, "slow consumer");
    assert.equal(downs[0].reconnect, true);
    await until(() => c.state == "connected" && sub.state == "subscribed", "reconnected and resubscribed");
    assert.equal((await api(server, "channels", {}))[1].channels[ch].subscribers, 1, "one subscription: the new one");
    const last = await publish(server, ch, { n: "after" });
    await until(() => sub.position().offset == last, "the publication after the reconnect");
    assert.deepEqual(w.violations, [], "each offset once, in order, or a gap event");
    // It read fewer than were published before it was cut: what it
    // missed is either recovered or announced.
    const delivered = w.offsets.length;
    const announced = w.gaps.length;
    assert.ok(announced > 0 || delivered == n + 1, `delivered ${delivered} of ${n + 1}, ${announced} gaps`);
  } finally {
    c.disconnect();
    await tcp.close();
    await server.stop();
  }
});
