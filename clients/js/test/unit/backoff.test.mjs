import { test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";
import { backoff, Wavecast } from "../../dist/index.mjs";
import { FakeWS, connected, flush, setup, sock, teardown, tick } from "./fake.mjs";

beforeEach(setup);
afterEach(teardown);

test("every delay lies in [min/2, min * 2^attempt capped at max]", () => {
  for (const [min, max] of [[500, 20000], [100, 1000], [2000, 1000]]) {
    const lo = Math.min(min, max) / 2;
    for (let attempt = 0; attempt < 60; attempt++) {
      const cap = Math.min(max, Math.min(min, max) * 2 ** attempt);
      for (const r of [0, 1e-9, 0.25, 0.5, 0.999999]) {
        const d = backoff(attempt, min, max, r);
        assert.ok(d >= lo && d <= cap, `attempt ${attempt}, random ${r}: ${d} not in [${lo}, ${cap}]`);
      }
    }
  }
  assert.equal(backoff(0, 500, 20000, 0), 250);
  assert.equal(backoff(0, 500, 20000, 1), 500);
  assert.equal(backoff(10, 500, 20000, 1), 20000);
  assert.equal(backoff(1000, 500, 20000, 1), 20000);
});

test("the jitter is full: delays spread over the whole window", () => {
  const ds = Array.from({ length: 2000 }, () => backoff(6, 500, 20000));
  const lo = Math.min(...ds), hi = Math.max(...ds);
  // Window [250, 20000]: a crowd of clients covers it, not one instant.
  assert.ok(lo < 250 + 500 && hi > 20000 - 500, `${lo}..${hi}`);
  const buckets = new Array(10).fill(0);
  for (const d of ds) buckets[Math.min(9, Math.floor(((d - 250) / 19750) * 10))]++;
  for (const b of buckets) assert.ok(b > 120 && b < 290, `uneven: ${buckets}`);
});

test("the client waits its backoff between attempts, growing, and starts over after a connection stayed up", async () => {
  let random = 0.999;
  mock.method(Math, "random", () => random);
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"] });
  c.connect();
  await flush();
  assert.equal(FakeWS.all.length, 1);
  // The server is down: each attempt fails at once.
  const caps = [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000];
  for (const cap of caps) {
    sock().drop(1006);
    assert.equal(c.state, "connecting");
    const n = FakeWS.all.length;
    await tick(cap * 0.999 - 5);
    assert.equal(FakeWS.all.length, n, `reconnected before ${cap}`);
    await tick(10);
    assert.equal(FakeWS.all.length, n + 1, `not reconnected by ${cap}`);
  }
  // Up, and stayed up: the next delay is the first one again.
  sock().open();
  sock().reply("connect", { client: "c", user: "" });
  await tick(6000);
  sock().drop(1006);
  const n = FakeWS.all.length;
  await tick(500);
  assert.equal(FakeWS.all.length, n + 1);
  // Up, but closed at once: the backoff keeps growing.
  sock().open();
  sock().reply("connect", { client: "c", user: "" });
  sock().drop(1006);
  await tick(990);
  assert.equal(FakeWS.all.length, n + 1, "attempt 1: up to 1000 ms");
  await tick(10);
  assert.equal(FakeWS.all.length, n + 2);
  c.disconnect();
});

test("custom delays are honoured", async () => {
  mock.method(Math, "random", () => 0);
  const c = await connected({ minReconnectDelay: 2000, maxReconnectDelay: 3000 });
  sock().drop(1006);
  await tick(999);
  assert.equal(FakeWS.all.length, 1);
  await tick(1);
  assert.equal(FakeWS.all.length, 2);
  c.disconnect();
});
